package telemetry

// ScopeName is the instrumentation scope of every meter and tracer of the mesh.
const ScopeName = "github.com/inmesh/inmesh"

// Instrument names, units and descriptions. Units follow UCUM as the OTel
// semantic conventions ask: "s" for durations, "{thing}" for counts.
const (
	// MetricHTTPClientDuration is the semantic-convention histogram of one
	// logical HTTP client call, retries included.
	MetricHTTPClientDuration = "http.client.request.duration"
	UnitHTTPClientDuration   = "s"
	DescHTTPClientDuration   = "Duration of HTTP client requests."

	// MetricHTTPServerDuration is reserved for the server middleware.
	MetricHTTPServerDuration = "http.server.request.duration"
	UnitHTTPServerDuration   = "s"
	DescHTTPServerDuration   = "Duration of HTTP server requests."

	// MetricRPCClientDuration and MetricRPCServerDuration are the
	// histograms of gRPC calls under the names of the product's contract
	// (rpc.client.duration, rpc.server.duration), in seconds like HTTP's,
	// so that one dashboard reads both protocols (their units and the rpc.*
	// attributes are in rpc.go). The newest conventions call them
	// rpc.client.call.duration and rpc.server.call.duration; renaming them
	// is a change of the contract, not of this package.
	MetricRPCClientDuration = "rpc.client.duration"
	MetricRPCServerDuration = "rpc.server.duration"

	// MetricClientAttempts counts attempts, the first of each call included;
	// divided by the count of http.client.request.duration it gives the
	// attempts per call.
	MetricClientAttempts = "inmesh.client.attempts"
	UnitClientAttempts   = "{attempt}"
	DescClientAttempts   = "Attempts made by client calls, first attempts included."

	// MetricBudgetExhausted counts retries refused by the retry budget.
	MetricBudgetExhausted = "inmesh.retry.budget.exhausted"
	UnitBudgetExhausted   = "{retry}"
	DescBudgetExhausted   = "Retries not made because the retry budget was exhausted."

	// MetricBreakerTransitions counts circuit breaker state changes.
	MetricBreakerTransitions = "inmesh.circuit_breaker.transitions"
	UnitBreakerTransitions   = "{transition}"
	DescBreakerTransitions   = "Circuit breaker state transitions, per destination service."

	// MetricOutlierEjections counts endpoints ejected by outlier detection.
	MetricOutlierEjections = "inmesh.outlier.ejections"
	UnitOutlierEjections   = "{ejection}"
	DescOutlierEjections   = "Endpoints ejected by outlier detection."

	// MetricPolicyUpdates counts policy documents applied or rejected.
	MetricPolicyUpdates = "inmesh.policy.updates"
	UnitPolicyUpdates   = "{update}"
	DescPolicyUpdates   = "Policy documents received from a control plane source, applied or rejected."

	// MetricCertificateExpiry is a gauge of the seconds left until this
	// workload's certificate expires.
	MetricCertificateExpiry = "inmesh.certificate.expiry"
	UnitCertificateExpiry   = "s"
	DescCertificateExpiry   = "Seconds until this workload's certificate expires."

	// MetricAuthzDecisions counts the authorization decisions on incoming
	// requests (HTTP and gRPC), by decision, mode and deciding rule.
	MetricAuthzDecisions = "inmesh.authz.decisions"
	UnitAuthzDecisions   = "{decision}"
	DescAuthzDecisions   = "Authorization decisions on incoming requests, allow or deny; under mode audit a deny is not enforced."

	// MetricPolicyStaleness is a gauge of how stale the control plane's
	// last answer may be (Consul's X-Consul-LastContact).
	MetricPolicyStaleness = "inmesh.policy.staleness"
	UnitPolicyStaleness   = "s"
	DescPolicyStaleness   = "How stale the control plane's last answer may be (Consul's last contact with its leader)."
)

// Attribute keys. The semantic-convention keys come first; server.address
// carries the logical destination service name, not a host.
const (
	AttrServerAddress          = "server.address"
	AttrHTTPRequestMethod      = "http.request.method"
	AttrHTTPResponseStatusCode = "http.response.status_code"
	AttrErrorType              = "error.type"

	AttrRoute         = "inmesh.route"
	AttrSubset        = "inmesh.subset"
	AttrEndpoint      = "inmesh.endpoint"
	AttrPolicyVersion = "inmesh.policy.version"
	AttrService       = "inmesh.service"        // this workload's own service (server side)
	AttrCaller        = "inmesh.caller"         // the calling service, from its verified identity
	AttrAuthzDecision = "inmesh.authz.decision" // allow | deny
	AttrAuthzMode     = "inmesh.authz.mode"     // enforce | audit
	AttrAuthzRule     = "inmesh.authz.rule"     // the rule that decided: rules[i], deny[i], default
	AttrIdentity      = "inmesh.identity"       // a SPIFFE ID

	// AttrBreakerFrom and AttrBreakerTo are the states of a breaker
	// transition ("closed", "open", "half-open").
	AttrBreakerFrom = "from"
	AttrBreakerTo   = "to"
	// AttrPolicyResult is ResultApplied or ResultRejected; AttrPolicySource
	// names the control plane source ("file:/etc/mesh.yaml", "consul", ...).
	AttrPolicyResult = "result"
	AttrPolicySource = "source"

	// Attributes of the per-attempt span event EventAttempt.
	AttrAttemptNumber  = "inmesh.attempt.number"  // 1 for the first try
	AttrAttemptOutcome = "inmesh.attempt.outcome" // "ok", a status code, or a failure layer
	AttrAttemptBackoff = "inmesh.attempt.backoff" // seconds waited before this attempt
)

// Values of AttrPolicyResult.
const (
	ResultApplied  = "applied"
	ResultRejected = "rejected"
)

// EventAttempt is the name of the span event added for each attempt.
const EventAttempt = "inmesh.attempt"

// errorTypeOther is the semantic-convention value of error.type when a
// failure has no more specific low-cardinality name.
const errorTypeOther = "_OTHER"

// methodOther is the semantic-convention value of http.request.method for a
// method outside the known set, which keeps the attribute's cardinality bounded.
const methodOther = "_OTHER"

// httpDurationBuckets are the explicit bucket boundaries, in seconds, of the
// duration histograms: the semantic-convention advice (5ms .. 10s) with two
// finer buckets below it, since in-cluster calls often take under 5ms.
var httpDurationBuckets = []float64{
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
}

// maxCachedAttributeSets bounds each attribute-set cache. Past it, sets are
// built per call and not kept, so a caller feeding unbounded values costs CPU,
// never unbounded memory.
const maxCachedAttributeSets = 4096

// normalizeMethod maps an HTTP method to itself when it is a known method and
// to "_OTHER" otherwise, as the semantic conventions ask. "" means GET, as in
// net/http. It does not allocate.
func normalizeMethod(m string) string {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY":
		return m
	case "":
		return "GET"
	}
	return methodOther
}

// Hedging: the counter of hedged attempts and the span event of each.
const (
	// MetricHedges counts hedged attempts by AttrHedgeResult.
	MetricHedges = "inmesh.hedges"
	UnitHedges   = "{hedge}"
	DescHedges   = "Hedged attempts: sent, won (answered first), or refused by the retry budget."

	// AttrHedgeResult is HedgeSent, HedgeWon or HedgeRefused.
	AttrHedgeResult = "result"

	// EventHedge is the span event of a hedge sent or refused, with
	// AttrAttemptNumber (the hedge's attempt, sent or not), AttrEndpoint
	// (the endpoint the core picked, "" when the balancer picks) and
	// AttrHedgeResult.
	EventHedge = "inmesh.hedge"
)

// Values of AttrHedgeResult.
const (
	HedgeSent    = "sent"    // a hedged attempt was sent
	HedgeWon     = "won"     // a hedged attempt's answer was the call's
	HedgeRefused = "refused" // the retry budget refused a hedge: the call kept waiting for the attempts in flight
)

// The diagnostic surface: what a span says of a call and the breaker state
// gauge.
const (
	// AttrHTTPRoute is the semantic-convention route attribute: on the
	// mesh's HTTP client spans and http.client.request.duration it is the
	// name of the policy route that matched, never the raw path, so its
	// cardinality is the policy's routes.
	AttrHTTPRoute = "http.route"
	// AttrAttempts is the number of attempts a call made, hedges included,
	// set on its client span when it ends.
	AttrAttempts = "inmesh.attempts"
	// AttrCallerIdentity is the caller's verified SPIFFE ID on a server
	// span (spans only: an ID per workload is no attribute for a metric).
	AttrCallerIdentity = "inmesh.caller.identity"

	// EventBudgetRefused is the span event of a retry the retry budget
	// refused, with AttrAttemptNumber (the attempt it would have been) and
	// AttrAttemptOutcome (the outcome of the attempt it would have retried).
	EventBudgetRefused = "inmesh.retry.budget.exhausted"

	// MetricBreakerState is the state of each circuit breaker as a state
	// set: one point per breaker and state (AttrBreakerState), 1 for the
	// state it is in and 0 for the others, with server.address and, for a
	// route's own breaker, inmesh.route.
	MetricBreakerState = "inmesh.circuit_breaker.state"
	UnitBreakerState   = "1"
	DescBreakerState   = "Circuit breaker state: 1 for the state each breaker is in (closed, open, half-open), 0 for the others."
	AttrBreakerState   = "state"
)
