fn main() -> std::process::ExitCode {
    run_build_migrations::main(std::env::args_os())
}
