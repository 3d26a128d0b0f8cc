//! The docker harness (`common::docker`) and the project's docker wrapper (`shared::docker`),
//! which the docker tools build on, against the suite's own engine.

use shared::docker::Docker;

use crate::common::docker::*;

#[test]
fn image_has_busybox_files_with_modes_and_container_is_removed_on_drop() {
    require!(ready(), READY);
    let image = ImageBuilder::new("harness")
        .file("/etc/greeting", "hello\n", 0o640)
        .file("/usr/local/bin/hi", "#!/bin/sh\necho hi \"$@\"\n", 0o755)
        .line(r#"CMD ["sleep", "86400"]"#)
        .build();
    let name = {
        let container = Container::run("harness", &image, &[], &[]);
        assert_eq!(container.read_file("/etc/greeting").unwrap(), b"hello\n");
        let out = container.exec(&["stat", "-c", "%a", "/etc/greeting", "/tmp"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "640\n1777\n");
        let out = container.exec(&["hi", "there"]);
        assert_eq!(out.stdout, b"hi there\n");

        // The shared wrapper sees it, by exact name only.
        let docker = Docker::new(client());
        assert!(docker.container_exists(&container.name).unwrap());
        // docker's name filter matches substrings; the wrapper must not.
        let part = container.name.strip_prefix("hexclave-").unwrap();
        assert!(!docker.container_exists(part).unwrap());
        container.name.clone()
    };
    let docker = Docker::new(client());
    assert!(!docker.container_exists(&name).unwrap(), "removed on drop");
    // Removing a container that does not exist is not an error.
    docker.remove_container(&name).unwrap();
}

#[test]
fn wrapper_removes_a_running_container() {
    require!(ready(), READY);
    let image = ImageBuilder::new("harness")
        .line(r#"CMD ["sleep", "86400"]"#)
        .build();
    let container = Container::run("harness", &image, &[], &[]);
    let docker = Docker::new(client());
    docker.remove_container(&container.name).unwrap();
    assert!(!docker.container_exists(&container.name).unwrap());
    let err = docker
        .command(["exec", &container.name, "true"])
        .read()
        .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "running `{} exec {} true`: exit status 1: ",
            client().display(),
            container.name
        )),
        "{err}"
    );
}
