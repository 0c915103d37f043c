// Package identity gives each workload of the mesh a service identity and
// makes calls between workloads mutually authenticated and authorized.
//
// An identity is a SPIFFE ID ([ID], spiffe://<trust domain>/svc/<service>,
// or Consul's spiffe://<td>/ns/<ns>/dc/<dc>/svc/<service>) carried as the
// single URI SAN of an X.509 certificate (an X509-SVID), with the trust roots
// of its trust domain. A [Source] gives the current [Identity] and says when
// it changes; the package has three:
//
//   - [NewStaticSource]: a fixed identity, for tests;
//   - [DevCA]: an in-memory (or directory-shared, [LoadOrCreateDevCA]) CA for
//     local use, whose sources renew their leaves lazily at a random point
//     between 60% and 90% of their lifetime;
//   - [FileSource]: PEM files watched on disk.
//
// Package github.com/inmesh/inmesh/consul adds a fourth, the Consul Connect
// CA (consul.NewIdentitySource).
//
// [ClientConfig] and [ServerConfig] build crypto/tls configs that read the
// certificate through the handshake callbacks, so a rotated certificate is
// used by the next handshake without a restart while open connections keep
// working, and that verify the peer in VerifyConnection, on full and resumed
// handshakes alike, against the roots current at that moment ([VerifyPeer]:
// exactly one URI SAN, leaf not a CA, right trust domain, client or server
// key usage, no host name check). The client also checks that the server is
// the service it meant to call. Every refusal is a *[VerifyError] whose
// [Reason] names the problem; everything denies on error.
//
// After the handshake, [PeerIDFromState] gives the caller's ID and an
// [Authorizer], compiled from the destination's policy.Authorization,
// decides by caller service, method and path (its deny list first, then its
// rules; a rule path covers itself and what lies below it, at a segment
// boundary; a path that is not canonical, see [CanonicalPath], matches no
// allow rule and is denied by any deny rule with paths that names the
// caller) whether the call may proceed, without locks or allocations, and
// names the rule that decided. Under mode audit the decisions are the same;
// the mesh lets the calls through ([Authorizer.Audit]). Package consul's Intentions does the same for Consul's
// service-intentions, on the same canonical path ([CanonicalPath]) and on
// every value of a repeated header.
//
// In the request flow (see the package documentation of
// [github.com/inmesh/inmesh/mesh]), identity sits at the mTLS dial on the
// client side (after the endpoint is picked) and at the top of the server's
// handler (handshake, then authorization, before the application runs).
//
// Every type of the package is safe for concurrent use. Values handed out
// ([Identity], certificates, roots) are shared immutable snapshots: never
// modify them.
package identity
