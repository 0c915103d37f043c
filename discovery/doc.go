// Package discovery holds the endpoints of each destination service and the
// load-balancing pickers that choose one of them for each attempt.
//
// It serves the split and the pick of the request flow that the package
// documentation of [github.com/inmesh/inmesh/mesh] describes. The split names a
// subset; Select narrows the service's endpoints to the subset's labels; the
// mesh wraps each endpoint in a Host (live state shared by the snapshots that
// contain it: outlier health and in-flight count) and builds a Picker over
// them with NewPicker. Each attempt picks again, so a retry can land on
// another host.
//
// A Snapshot is immutable once built: it is published whole behind an atomic
// pointer and never modified, so readers take no lock. Static builds the
// snapshot of a policy document's static endpoints; a live source (a
// control plane's, such as package consul's catalog) publishes snapshots of
// the same type.
//
// Pickers are safe for concurrent use. Pick never blocks, takes no lock and
// does not allocate. It skips hosts that are unavailable (ejected by outlier
// detection); when every host is unavailable it still returns one (panic
// mode, as in Envoy), since an ejected host is a better guess than none.
// The consistent-hash pickers (ring_hash, maglev: HashPicker) pick by a
// request's 64-bit hash instead (PickHash), walking on past unavailable
// hosts and the hosts a retry or hedge must avoid; Pick, for a request
// without a hash, hashes a random key.
//
// Host's Begin, End and InFlight are safe for concurrent use.
package discovery
