fn main() -> std::process::ExitCode {
    slim_docker_image::main(std::env::args_os())
}
