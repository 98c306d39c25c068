//! The configurations the whole-stack tests serve.

/// The resource named in the public-access 403.
pub const RESOURCE: &str = "Microsoft.ApiManagement/service/contoso";

/// An internal-network gateway on plain HTTP: the four endpoints of `contoso` by host name, 127.0.0.1 and
/// 10.0.0.0/16 as the virtual network, public access disabled, the management endpoint only from the
/// `admins` set, a deny exception inside an allowed block, a connection filter refusing 127.0.0.3 at accept
/// (listener `http`), and a listener behind a PROXY-protocol load balancer at 127.0.0.1 (listener `lb`) with
/// Azure, AWS and GCP private endpoint connections in every state.
pub const STACK: &str = r#"
resource = "Microsoft.ApiManagement/service/contoso"

[[listener]]
name = "http"
address = "127.0.0.1:0"
connection_filter = true

[[listener]]
name = "lb"
address = "127.0.0.1:0"
[listener.proxy_protocol]
required_from = ["127.0.0.1"]
deadline_ms = 20000

[client_address]
trusted_proxies = ["127.0.0.1", "10.0.3.0/24"]
forwarded = "x-forwarded-for"
max_entries = 5

[private_networks.networks]
vnet = ["127.0.0.1", "10.0.0.0/16"]

[[private_endpoint_connection]]
name = "pe-azure"
azure_link_id = 570425483
state = "approved"
targets = ["gateway"]

[[private_endpoint_connection]]
name = "pe-aws"
aws_vpc_endpoint_id = "vpce-0123456789abcdef0"
state = "approved"
targets = ["gateway", "portal"]

[[private_endpoint_connection]]
name = "pe-gcp"
gcp_psc_connection_id = 1234567890123
state = "approved"

[[private_endpoint_connection]]
name = "pe-azure-pending"
azure_link_id = 7
state = "pending"

[[private_endpoint_connection]]
name = "pe-aws-rejected"
aws_vpc_endpoint_id = "vpce-0ffffffffffffffff"
state = "rejected"

[public_access]
enabled = false

[ip.sets]
admins = ["127.0.0.1", "10.0.9.0/24"]

[ip.rules]
default = "allow"
deny = ["10.0.66.0/24"]
allow = ["10.0.66.5"]

[ip.endpoint.management]
default = "deny"
allow = ["@admins"]

[ip.connection]
default = "allow"
deny = ["127.0.0.3"]

[hosts.service]
name = "contoso"
domain = "azure-api.net"
private_link = true
"#;

/// Azure's message for a public caller, word for word, for `ip` and [`RESOURCE`].
pub fn azure_403(ip: &str) -> String {
    format!(
        "Request originated from client public IP address {ip}, public network access on this '{RESOURCE}' is \
         disabled. To connect to '{RESOURCE}', please use the Private Endpoint from inside your virtual network."
    )
}

/// An HTTPS gateway with two TLS virtual hosts: `api` (the gateway endpoint, client certificates optional,
/// refused chains answered 403 at HTTP, the default) and `mgmt` (the management endpoint, client
/// certificates required, refused chains refused in the handshake), and `portal` (the portal endpoint, no
/// client certificates, session tickets on). `{dir}` is the certificate directory:
/// `server.crt`/`server.key` and the client CA `ca.crt`.
pub const MTLS: &str = r#"
resource = "Microsoft.ApiManagement/service/contoso"

[[listener]]
name = "https"
address = "127.0.0.1:0"
tls = true

[hosts.service]
name = "contoso"
domain = "azure-api.net"

[hosts.endpoint.gateway]
virtual_host = "api"

[hosts.endpoint.management]
virtual_host = "mgmt"

[hosts.endpoint.portal]
virtual_host = "portal"

[[keystore]]
name = "server"
cert = "{dir}/server.crt"
key = "{dir}/server.key"

[[truststore]]
name = "clients"
certs = ["{dir}/ca.crt"]

[[virtual_host]]
name = "api"
hosts = ["contoso.azure-api.net"]
keystore = "server"
client_auth = "optional"
truststore = "clients"
refuse_at_http = true
default = true

[[virtual_host]]
name = "mgmt"
hosts = ["contoso.management.azure-api.net"]
keystore = "server"
client_auth = "required"
truststore = "clients"

[[virtual_host]]
name = "portal"
hosts = ["contoso.developer.azure-api.net"]
keystore = "server"
"#;
