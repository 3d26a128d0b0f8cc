//! Layer 3: the emulator's own files and names, as several tools read and write them — env files
//! (one parser), the internal keys, the data volumes, and the paths more than one tool knows.

pub mod envfile;
pub mod keystore;
pub mod names;
pub mod volumes;

/// The build's env file: copied from the `STACKBUNDLE` disk by install-emulator-containers, read
/// by render-stack-env, run-build-migrations, slim-docker-image and provision-build.
pub const BUILD_ENV: &str = "/etc/stack-build.env";
/// The build's architecture (`STACK_EMULATOR_BUILD_ARCH=…`), copied beside [`BUILD_ENV`].
pub const BUILD_ARCH_ENV: &str = "/etc/stack-build-arch.env";
/// The env computed for the build (ports and keys), handed to `docker --env-file` after
/// [`BUILD_ENV`].
pub const COMPUTED_ENV: &str = "/etc/stack-build-computed.env";
/// Where the host's shared folder is mounted, in the guest and in the stack container.
pub const HOST_DIR: &str = "/host";
/// The emulator's image, as the bundle disk brings it: run by the deps container and the stack
/// container, rebuilt under the same name by slim-docker-image.
pub const IMAGE: &str = "stack-local-emulator";
/// The container the emulator runs in (`stack.service`).
pub const CONTAINER: &str = "stack";
/// The deps-only container of the build, in which the migrations run.
pub const DEPS_CONTAINER: &str = "stack-build-init";
/// The backend's port in the guest (`BACKEND_PORT` of the computed env file).
pub const BACKEND_PORT: u16 = 8102;
/// The dashboard's port in the guest (`DASHBOARD_PORT`).
pub const DASHBOARD_PORT: u16 = 8101;
/// Where the probes find the emulator's services: the guest's loopback.
pub const LOOPBACK: &str = "127.0.0.1";
