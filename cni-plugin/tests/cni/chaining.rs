//! Chaining: skein-cni first in a conflist, the reference portmap after it; a hostPort
//! on the node reaches the pod from the `outside` host.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use crate::driver::*;

#[test]
fn portmap_after_skein_cni_exposes_a_host_port_to_the_outside() {
    let bed = bed(1, true);
    let node = bed.node(1);
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "cbr0",
        "plugins": [
            {
                "type": "skein-cni",
                "subnetFile": node.dirs.subnet_file,
                "ipam": {"type": "host-local", "dataDir": node.dirs.ipam_data_dir}
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    });
    let runtime =
        json!({"portMappings": [{"hostPort": 30080, "containerPort": 8080, "protocol": "tcp"}]});
    let pod = Pod::new(&bed, "pm");
    let call = pod.call("ADD");
    let result = conflist_add(node, &list, &call, &runtime)
        .unwrap_or_else(|a| panic!("conflist ADD failed: {} {}", a.stdout, a.stderr));
    // prevResult passed through portmap unchanged in substance.
    assert_eq!(result["ips"][0]["address"], "10.244.1.2/24");
    assert_eq!(
        result["interfaces"][2]["sandbox"],
        pod.path.display().to_string()
    );

    let listener = pod.listen("0.0.0.0:8080".parse().unwrap());
    let server = serve_once(listener);
    let to = SocketAddr::new(node.addr.into(), 30080);
    let stream = bed
        .outside()
        .connect_tcp(to, Duration::from_secs(3))
        .expect("outside reaches the pod through the node's hostPort");
    ping_pong(stream);
    let peer = server.join().unwrap().unwrap();
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::from(skein_testbed::OUTSIDE_ADDR)
    );

    conflist_del(node, &list, &pod.call("DEL"), &runtime, &result);
    assert_no_allocations(node, "cbr0");
    assert_no_veths(node);
    // The port is closed again.
    assert!(
        bed.outside()
            .connect_tcp(to, Duration::from_millis(500))
            .is_err()
    );
}
