/* OpenBLAS's own header, so the openblas_* extensions (thread count) are visible. */
#include <cblas-openblas.h>
