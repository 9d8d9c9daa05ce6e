//! What lameduck's integration tests and benchmarks share, in one crate (a dev-dependency of the
//! workspace's packages, never a dependency of the init). The tests exercise the real thing, so
//! this is what runs it: the built binaries as PID 1 or subreaper (`process`, `binaries`), real
//! servers (`nginx`, `apps`) behind real HAProxy (`haproxy`) under load (`load`), the scenarios
//! built of them (`scenario`), addresses and network namespaces (`network`), real containers
//! with the kubelet's part played against them (`docker`, `kubelet`), Kubernetes' own schemas
//! (`kubernetes`), and the admission webhook over real TLS (`webhook`, behind its feature).

pub mod apps;
pub mod binaries;
pub mod docker;
pub mod haproxy;
pub mod http;
pub mod kubelet;
pub mod kubernetes;
pub mod load;
pub mod network;
pub mod nginx;
pub mod process;
pub mod scenario;
/// The plugin's table of known servers, compiled from its source here because the plugin is a
/// binary crate with no library to import it from: the scenarios stop each server with the very
/// signals the plugin tells users to use.
#[path = "../../kubectl-lameduck/src/servers.rs"]
pub mod servers;
pub mod temp;
#[cfg(feature = "webhook")]
pub mod webhook;
