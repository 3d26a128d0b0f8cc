mod docker_harness;
mod log_provision;
mod log_provision_stream;
mod mount_host_fs;
mod trigger_fast_rotate;
