fn main() -> std::process::ExitCode {
    render_stack_env::main(std::env::args_os())
}
