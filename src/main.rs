//! The `cityhub` binary; the commands are in [`cityhub::cli`].

fn main() -> std::process::ExitCode {
    cityhub::cli::main()
}
