// Package policy holds the inmesh policy document: its types, parsing and
// validation, the resolved per-service view the data plane reads, versioned
// immutable snapshots, and the sources that deliver them (a fixed document,
// a watched file).
//
// # The document
//
// A policy document is YAML or JSON with the same field names (JSON is read
// as YAML). It names the services of the fleet (service names are URL hosts:
// "http://billing/charge") and, for each, its static endpoints, subsets,
// per-call settings (timeout, retry, circuit breaker, outlier detection, load
// balancer, TLS), routes with traffic splits, and authorization. A defaults
// block may hold any field of a service. See [Document] for every field, the
// README's policy reference for a document that uses each of them, and
// examples/platform/mesh.yaml for the demo's.
//
// [Parse] decodes strictly: unknown fields, duplicate keys, wrong types and
// durations without a unit are errors, YAML aliases are followed with a
// bound on the work (an alias bomb fails fast), and every problem is
// reported with its path. A document is refused before it is parsed when
// it is larger than [MaxDocumentSize] or its parse would cost more than
// 150 MB, and before it is validated when it names more than [MaxServices]
// services or resolves to more than [MaxResolvedRoutes] routes; a fleet of
// 20,000 services fits. Problems are reported as in
//
//	policy: services.billing.retry.attempts: must be 1..10
//
// Errors are *[ValidationError] values listing [FieldError]s; errors.Is(err,
// [ErrInvalid]) holds for all of them.
//
// # Merge order
//
// The settings that apply to a call are defaults ⊕ service ⊕ route: field
// by field, a field set at the more specific level wins. Zero values mean
// "not set", except where a pointer carries presence (budget ratio and
// min_per_second, non_idempotent) or a nil list differs from an empty one
// (retry_on: [] means retry on nothing). Circuit breaking and outlier
// detection are off unless some level has the block. Subsets merge key by
// key (the service wins); a service's endpoints, routes and authorization
// replace the defaults' whole. A service without routes sends everything to
// all its endpoints through one implicit route. [Effective] is the result,
// with every default filled in; validation rules that span levels (a split
// naming a subset, backoff max >= initial) are checked on this merged view.
//
// # Snapshots
//
// [NewSnapshot] validates a document, resolves every service into a
// [ResolvedService] and versions it: the document's version label, or its
// content hash. A [Snapshot] holds its own deep copy of the document and is
// immutable: it is shared by every goroutine of the data plane without
// locks and replaced whole when the policy changes. Never modify a snapshot
// or anything reachable from it.
//
// A control plane that rebuilds the snapshot at each change calls
// [NewSnapshotFrom] with the last one instead: the services whose block is
// the same pointer (under the same defaults pointer) keep the last
// snapshot's copy and resolved view, pointer for pointer, so a change of
// one block costs about one block. It then must never modify a block it
// passed.
//
// # Sources
//
// A [Source] delivers snapshots as [Event]s: [NewStaticSource] for a fixed
// document, [NewFileSource] for a file watched for changes; package consul
// gives one for Consul KV. A rejected document is reported as an Event with
// Err; the source keeps watching, and the caller keeps the previous
// snapshot in force. A Source is a stream rather than a current value
// because each rejection is an event of its own, which a mesh logs, counts
// and shows.
//
// A control plane that keeps the policy as separate blocks (Consul KV: one
// key per service) reads each with [ParseService] and [ParseGlobal], and
// joins them with [Blocks.Assemble], which keeps a bad block from taking
// the good ones down.
//
// # Concurrency
//
// Parse, NewSnapshot, NewSnapshotFrom, Validate and the methods of Snapshot are safe for
// concurrent use. A Document is plain data: do not modify one while another
// goroutine reads it. Sources are safe for concurrent use; each Watch call
// is independent and calls its emit function from one goroutine.
//
// In the request flow (see the package documentation of
// [github.com/inmesh/inmesh/mesh]), this package comes first: the mesh holds the current
// Snapshot and looks up the destination's ResolvedService and routes on
// every call, without locks.
package policy
