// Package consul makes HashiCorp Consul a mesh's control plane, and holds
// every piece of inmesh that talks to Consul (no other package imports its
// client):
//
//	m, err := mesh.New(ctx,
//		mesh.WithService("billing"),
//		mesh.WithControlPlane(consul.New(consul.Config{Client: client})), // Prefix defaults to "inmesh"
//	)
//
// where client is an *api.Client of github.com/hashicorp/consul/api. With
// it a mesh takes:
//
//   - its policy from KV, one key per block under the prefix:
//     <prefix>/mesh (the document's egress and trust_domain),
//     <prefix>/defaults and <prefix>/services/<name>, YAML or JSON, watched
//     with one blocking query; a key that does not validate is rejected on
//     its own and its block keeps its last good version. Keys splits a
//     document into these keys and FromKeys reads them back (`inmesh push`
//     and `inmesh get`);
//   - Consul's L7 config entries, applied in process on top of the KV
//     policy: the compiled discovery chain of each destination it calls
//     (service-router, service-splitter, service-resolver), from its first
//     call, and its own service-defaults UpstreamConfig; where an entry
//     speaks it wins, and the KV block adds what entries cannot say (see
//     the README's Consul section). Every service Consul knows (a KV
//     block, a config entry, a Connect-capable instance) is a mesh
//     service. Each ResolvedService records which entry decided each part
//     (Provenance) and the KV fields it shadows; Shadowed lists them for a
//     document;
//   - the endpoints of each destination it calls, from its first call on,
//     from the connect health endpoint (/v1/health/connect/<service>;
//     passing instances, and warning ones on New's control plane): a
//     Connect-native instance at its own address, an instance behind an
//     Envoy sidecar at its sidecar's (the connect-proxy registration,
//     never the service's own port), both called with mutual TLS, the peer
//     proving the destination's SPIFFE ID. A plain instance, neither
//     Connect-native nor behind a sidecar, is not called (the log says so
//     once). An instance's labels are its Service.Meta plus TagLabel(t)
//     for each tag t (a sidecar's, those of its registration), and
//     SubsetLabel(s) for each service-resolver subset s it belongs to;
//   - its identity from the agent's Connect CA: the leaf and the roots,
//     watched, rotated without a restart; SPIFFE IDs in Consul's form
//     spiffe://<trust-domain>/ns/<ns>/dc/<dc>/svc/<service>. Calls send the
//     TLS server name Consul gives Envoy for an upstream (ServiceSNI:
//     <service>.default.<dc>.internal.<trust-domain>), which a sidecar's
//     public listener expects; an inmesh server takes any server name and
//     authorizes the client by its certificate's SPIFFE ID;
//   - the authorization of its callers from the service-intentions config
//     entry of its service, L4 and L7, evaluated in process on every
//     request (see Intentions), in place of the policy's authorization
//     blocks;
//   - Mesh.Register as a Connect-native agent registration
//     (Connect.Native) with a TCP health check, deregistered by the mesh's
//     Close: Envoy sidecars of other services, and other meshes, find it on
//     the connect health endpoint and call it with mutual TLS, under its
//     intentions;
//   - the fleet's status: each registered instance's policy version (and
//     whether it serves from its cache) in KV under the status prefix
//     (ReportStatus, a mesh.StatusReporter), read back per service by
//     FleetStatus for `inmesh status --consul`.
//
// Every watch follows Consul's blocking-query rules (consul/internal/blocking):
// the index is reset when it goes backwards, errors back off with jitter,
// loops are rate limited under churn, and a failed query never counts as a
// deletion.
//
// # Sources
//
// The four sources, PolicySource, EndpointSource, IdentitySource and
// IntentionsSource, have one shape, go-spiffe's: a constructor that takes a
// context first and blocks until the first value (or the context ends:
// then it stops and fails), Current for the value in force, Changed for a
// channel closed at its next change, and Close. The context only bounds the
// wait; the watches last until Close. A mesh on New's ControlPlane does not
// call these constructors: the control plane starts the same sources
// without waiting for them (the mesh waits, and may start from its
// last-known-good cache while Consul is down). They serve tools and tests,
// such as a Connect leaf for a client that is no mesh (NewIdentitySource).
//
// # Concurrency and the request flow
//
// Every type is safe for concurrent use. On the request path (see package
// mesh for the flow) sit only the compiled intentions, which a mesh's
// Handler and gRPC server ask on every request without a lock or an
// allocation of their own, and the start of a destination's endpoint watch,
// at its first call.
package consul
