mod docker_harness;
mod fake_emulator;
mod log_provision;
mod log_provision_stream;
mod mount_host_fs;
mod render_stack_env;
mod run_build_migrations;
mod trigger_fast_rotate;
