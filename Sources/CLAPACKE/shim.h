/* lapacke.h defines C99 complex types that Swift imports as opaque pointers; wtool's kernels
   are all real, but plain structs keep the complex prototypes importable. */
typedef struct { float re, im; } wt_complex_float;
typedef struct { double re, im; } wt_complex_double;
#define lapack_complex_float  wt_complex_float
#define lapack_complex_double wt_complex_double
#include <lapacke.h>
