import ArgumentParser
import SafeTensors
import Surgery
#if canImport(Glibc)
import Glibc
#endif

// Exit status: 0 done, 1 run-time failure (bad input, I/O), 2 usage error. ArgumentParser's own
// validation failures (64) are mapped to 2; `diff` decides its own statuses (see DiffCommand).
Engine.configureProcess()
do {
    var command = try Wtool.parseAsRoot()
    try command.run()
    exit(0)
} catch let e as FormatError {
    fail("\(e)", status: 1)
} catch let e as UsageError {
    fail("\(e)", status: 2)
} catch let e as CommandExit {
    fflush(nil)
    exit(e.status)
} catch {
    let code = Wtool.exitCode(for: error)
    if code == .success {
        print(Wtool.fullMessage(for: error))
        exit(0)
    }
    if code == .validationFailure {
        writeStderr(Wtool.fullMessage(for: error) + "\n")
        fflush(nil)
        exit(2)
    }
    fail("\(error)", status: 1)
}

func fail(_ message: String, status: Int32) -> Never {
    fflush(nil)
    writeStderr("wtool: error: \(escapedForTerminal(message))\n")
    exit(status)
}

/// Ends a command with a chosen status after it has printed its result.
struct CommandExit: Error { let status: Int32 }
