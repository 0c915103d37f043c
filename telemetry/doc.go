// Package telemetry holds every OpenTelemetry instrument, attribute key and
// span of the mesh in one place, so that names and units cannot drift between
// the HTTP and gRPC paths.
//
// The mesh records one logical call (route match to the final answer,
// retries included) at the telemetry step of the request flow that the
// package documentation of [github.com/inmesh/inmesh/mesh] describes.
//
// StartClientCall opens the one client span of a logical call before the
// first attempt, AttemptEvent adds an event per attempt, Inject writes the W3C trace
// context into each attempt's headers, BudgetEvent marks a retry the budget
// refused, and EndClientCall closes the span with what it says of the call:
// the subset, the attempts, the policy version and, on failure, the layer as
// error.type (the route's name is set at start as http.route and
// inmesh.route). When the
// call is over, RecordHTTPClient records its duration and the route's
// AttemptCounter its attempts (one atomic add, observed at collection); the
// resilience layers report budget exhaustion, breaker
// transitions and ejections, and the policy sources report updates.
//
// gRPC calls are recorded the same way (rpc.go): StartRPCClientCall and
// EndRPCClientCall around the call, OutgoingMetadata for the outgoing
// metadata, RecordRPCClient for rpc.client.duration; on the server,
// StartRPCServerCall (continuing the trace from the incoming metadata),
// EndRPCServerCallAs (with the caller's service and SPIFFE ID) and
// RecordRPCServer for rpc.server.duration. Every duration is in
// seconds, HTTP's and gRPC's alike.
//
// Cardinality is bounded on every instrument: server.address is the
// destination service, the route attributes are route names (never the raw
// path), error.type is a layer or a status; no duration histogram carries an
// endpoint address. The state gauges (inmesh.circuit_breaker.state,
// inmesh.concurrency.limit, inmesh.certificate.expiry,
// inmesh.policy.staleness) are observed at collection from what the mesh
// sets (SetBreakerStates, SetCertificateExpiry, SetPolicyStaleness).
//
// Names follow the OpenTelemetry semantic conventions where one exists
// (http.client.request.duration in seconds, server.address,
// http.request.method, http.response.status_code, error.type); mesh-specific
// instruments and attributes use the "inmesh." prefix. See names.go.
//
// Only the OpenTelemetry API is used here; the SDK (and so the exporters) is
// the application's choice. A nil MeterProvider, TracerProvider or
// TextMapPropagator means the OTel globals, obtained at construction through
// the globals' delegates, so a provider installed later with otel.SetMeterProvider
// or otel.SetTracerProvider still takes effect.
//
// Instruments and Tracing are safe for concurrent use. The per-call methods
// marked HOT cache their attribute sets in bounded copy-on-write maps: in steady
// state they take no lock and allocate nothing beyond what the configured SDK
// does itself. A nil *Instruments or *Tracing is valid and records nothing.
package telemetry
