mod docker_harness;
mod fake_emulator;
mod install_emulator_containers;
mod log_provision;
mod log_provision_stream;
mod mount_host_fs;
mod render_stack_env;
mod trigger_fast_rotate;
