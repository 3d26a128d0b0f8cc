mod log_provision;
mod log_provision_stream;
mod mount_host_fs;
