fn main() -> std::process::ExitCode {
    run_stack_container::main(std::env::args_os())
}
