package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Document is a parsed policy document: the traffic policy of the fleet, as
// written in YAML or JSON. Obtain one with [Parse], or build one in code and
// check it with [Document.Validate].
//
// A Document is plain data. It is not safe to modify while another goroutine
// reads it; the snapshots built from it ([NewSnapshot]) never modify it and
// must not be modified by their users either.
type Document struct {
	// Version is an optional label. When empty, the mesh versions the
	// document by its content hash (see [Snapshot.Hash]).
	Version string `json:"version,omitempty"`
	// TrustDomain names the SPIFFE trust domain of the built-in dev CA.
	TrustDomain string `json:"trust_domain,omitempty"`
	// Defaults holds the fields that apply to every service unless the
	// service (or one of its routes) sets them.
	Defaults *Service `json:"defaults,omitempty"`
	// Services maps a service name (a URL host) to its policy.
	Services map[string]*Service `json:"services,omitempty"`
	// Egress is what a call to a host that is no service of the policy
	// gets: EgressAllow (sent untouched, outside the mesh) or EgressDeny
	// (failed, never dialed). "" means EgressAllow.
	Egress string `json:"egress,omitempty"`
}

// The values of [Document.Egress].
const (
	EgressAllow = "allow"
	EgressDeny  = "deny"
)

// Service is the policy of one destination service. The same type holds the
// document's defaults.
type Service struct {
	// Endpoints is the static discovery data of the service. With Consul
	// the catalog provides it instead.
	Endpoints []Endpoint `json:"endpoints,omitempty"`
	// Subsets maps a subset name to a label selector: an endpoint belongs to
	// the subset when its labels contain every pair of the selector.
	Subsets map[string]map[string]string `json:"subsets,omitempty"`
	// Settings holds the per-call settings, inline in the document.
	Settings
	// Routes are tried in order; the first that matches wins.
	Routes []Route `json:"routes,omitempty"`
	// Authorization says who may call the service; the destination enforces it.
	Authorization *Authorization `json:"authorization,omitempty"`
	// Concurrency caps the calls in flight from this process to the
	// service (client side).
	Concurrency *Concurrency `json:"concurrency,omitempty"`
	// RateLimit is enforced by the service's own mesh on its callers
	// (server side).
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
}

// Endpoint is one static instance of a service.
type Endpoint struct {
	Address string            `json:"address"` // host:port
	Labels  map[string]string `json:"labels,omitempty"`
}

// Settings are the per-call settings that may appear in the defaults, a
// service, or a route; the more specific level wins field by field. A zero
// field (or nil pointer) means "not set at this level"; in a parsed
// document, though, an integer written as 0 where 0 is out of range
// (attempts, consecutive_failures, half_open_requests) is an error, not
// "not set". Durations are at most a year (timeout, per_try_timeout,
// open_for, base_ejection) or an hour (backoff initial and max).
type Settings struct {
	// Timeout bounds the whole call, retries included.
	Timeout          Duration          `json:"timeout,omitempty"`
	Retry            *Retry            `json:"retry,omitempty"`
	CircuitBreaker   *CircuitBreaker   `json:"circuit_breaker,omitempty"`
	OutlierDetection *OutlierDetection `json:"outlier_detection,omitempty"`
	// LoadBalancer is round_robin, least_request, random, ring_hash or
	// maglev. A document may also write it as a mapping, sugar for the
	// flat fields: load_balancer: {policy: maglev, hash: [...], ring_hash:
	// {...}}, where hash may be one policy ({header: x-user}) and no
	// policy means ring_hash; it marshals back in the flat form.
	LoadBalancer string `json:"load_balancer,omitempty"`
	// TLS is strict or disable (client side, toward the destination).
	TLS string `json:"tls,omitempty"`
	// Hedge sends a second attempt to another endpoint when the first is
	// slow to answer.
	Hedge *Hedge `json:"hedge,omitempty"`
	// Fault injects delays and aborts into calls, in the caller's mesh.
	Fault *Fault `json:"fault,omitempty"`
	// ConnectTimeout bounds the dial (and TLS handshake) of a new
	// connection to an endpoint; 0 means the transport's default.
	ConnectTimeout Duration `json:"connect_timeout,omitempty"`
	// Hash lists how a request's hash is computed for the ring_hash and
	// maglev load balancers, tried in order (Envoy's hash policies); a
	// Hash with LoadBalancer unset means ring_hash.
	Hash []HashPolicy `json:"hash,omitempty"`
	// RingHash sizes the ring of the ring_hash load balancer.
	RingHash *RingHash `json:"ring_hash,omitempty"`
}

// HashPolicy is one input of a request's hash: exactly one of Header,
// Cookie, QueryParameter or SourceIP. Terminal stops at this policy when
// it produced a value.
type HashPolicy struct {
	Header         string `json:"header,omitempty"`
	Cookie         string `json:"cookie,omitempty"`
	QueryParameter string `json:"query_parameter,omitempty"`
	SourceIP       bool   `json:"source_ip,omitempty"`
	Terminal       bool   `json:"terminal,omitempty"`
}

// RingHash sizes a ring_hash load balancer's ring (Envoy's defaults: 1024
// and 8M entries).
type RingHash struct {
	MinimumRingSize int `json:"minimum_ring_size,omitempty"`
	MaximumRingSize int `json:"maximum_ring_size,omitempty"`
}

// Retry is the retry policy of a call.
type Retry struct {
	// Attempts is the total number of tries including the first, 1..10;
	// 0 means not set (but "attempts: 0" in a parsed document is invalid).
	Attempts      int      `json:"attempts,omitempty"`
	PerTryTimeout Duration `json:"per_try_timeout,omitempty"`
	Backoff       *Backoff `json:"backoff,omitempty"`
	// RetryOn names the conditions that are retried. nil means not set; a
	// non-nil empty list means "retry on nothing".
	RetryOn []string `json:"retry_on,omitempty"`
	Budget  *Budget  `json:"budget,omitempty"`
	// NonIdempotent allows retrying POST and PATCH (when the body can be
	// replayed). nil means not set.
	NonIdempotent *bool `json:"non_idempotent,omitempty"`
}

// MarshalJSON encodes r as encoding/json would, except that an empty,
// non-nil RetryOn is kept as "retry_on": [] (retry on nothing) instead of
// being left out (not set), so that re-encoding a document keeps its meaning
// and its hash.
func (r Retry) MarshalJSON() ([]byte, error) {
	type plain Retry // no methods: no recursion
	if r.RetryOn == nil || len(r.RetryOn) > 0 {
		return json.Marshal(plain(r))
	}
	return json.Marshal(struct {
		plain
		RetryOn []string `json:"retry_on"`
	}{plain(r), r.RetryOn})
}

// Backoff is the exponential backoff between attempts, with full jitter.
type Backoff struct {
	Initial Duration `json:"initial,omitempty"`
	Max     Duration `json:"max,omitempty"`
}

// Budget limits retries to a share of the calls (Finagle's retry budget).
// The pointer fields carry presence, so an explicit 0 overrides a default.
type Budget struct {
	Ratio        *float64 `json:"ratio,omitempty"`
	MinPerSecond *int     `json:"min_per_second,omitempty"`
}

// CircuitBreaker configures the per-destination circuit breaker, in one of
// two forms: consecutive failures (ConsecutiveFailures), or a failure rate
// over a sliding window (FailureRate, Window, MinCalls); not both. Zero
// fields take the defaults: the consecutive form with 5 failures; for the
// rate form a 10s window and 20 calls at least; 30s open and 1 half-open
// request for both.
type CircuitBreaker struct {
	ConsecutiveFailures int `json:"consecutive_failures,omitempty"`
	// FailureRate opens the breaker when at least this share (0 < rate <=
	// 1) of the calls of the last Window failed, and at least MinCalls
	// calls were made in it.
	FailureRate      float64  `json:"failure_rate,omitempty"`
	Window           Duration `json:"window,omitempty"`
	MinCalls         int      `json:"min_calls,omitempty"`
	OpenFor          Duration `json:"open_for,omitempty"`
	HalfOpenRequests int      `json:"half_open_requests,omitempty"`
}

// Concurrency caps the calls in flight from one process to a destination,
// with a fixed Max or an Adaptive limit (not both). A call that finds no
// free slot waits up to MaxWait for one (0: it is refused at once), then
// fails at layer overload.
type Concurrency struct {
	Max      int                  `json:"max,omitempty"`
	Adaptive *AdaptiveConcurrency `json:"adaptive,omitempty"`
	MaxWait  Duration             `json:"max_wait,omitempty"`
}

// AdaptiveConcurrency is a limit learned from the destination's latency
// and overload answers, kept within [Min, Max], starting at Initial.
// Zero fields take the defaults (1, 20, 1000; Initial within Min..Max).
type AdaptiveConcurrency struct {
	Min     int `json:"min,omitempty"`
	Initial int `json:"initial,omitempty"`
	Max     int `json:"max,omitempty"`
}

// Hedge sends up to Max extra attempts, each to another endpoint, when
// the attempts in flight have not answered after Delay (or after the
// route's recent latency at Quantile, such as "p95"; one of the two). The
// first answer wins and the others are canceled. Hedges draw on the retry
// budget. Only idempotent requests are hedged, unless NonIdempotent.
type Hedge struct {
	Delay         Duration `json:"delay,omitempty"`
	Quantile      string   `json:"quantile,omitempty"`
	Max           int      `json:"max,omitempty"` // default 1, at most 5
	NonIdempotent *bool    `json:"non_idempotent,omitempty"`
}

// RateLimit limits the calls a service accepts, per second with a burst,
// for all callers together or for each calling service (PerCaller), with
// a rate of its own for the callers named in Overrides (their burst
// scales with their rate). A refused call gets 429 (gRPC
// ResourceExhausted) marked "inmesh-error: rate_limit", with Retry-After.
type RateLimit struct {
	RequestsPerSecond float64            `json:"requests_per_second"`
	Burst             int                `json:"burst,omitempty"` // default: one second's worth, at least 1
	PerCaller         bool               `json:"per_caller,omitempty"`
	Overrides         map[string]float64 `json:"overrides,omitempty"`
}

// Fault injects failures into calls, in the caller's mesh, to test the
// protections. It is never on unless the document says so; Explain and
// the admin handler show it, and every injection is counted.
type Fault struct {
	Delay *FaultDelay `json:"delay,omitempty"`
	Abort *FaultAbort `json:"abort,omitempty"`
	// OnlyWithHeader limits the fault to requests that carry this header.
	OnlyWithHeader string `json:"only_with_header,omitempty"`
}

// FaultDelay delays Percent of the calls by Duration before they are sent.
type FaultDelay struct {
	Percent  float64  `json:"percent"`
	Duration Duration `json:"duration"`
}

// FaultAbort fails Percent of the calls without sending them: an HTTP
// call gets a CallError of layer fault naming HTTPStatus, an RPC one
// whose status has code GRPCCode.
type FaultAbort struct {
	Percent    float64 `json:"percent"`
	HTTPStatus int     `json:"http_status,omitempty"` // default 503
	GRPCCode   string  `json:"grpc_code,omitempty"`   // default unavailable
}

// OutlierDetection configures per-endpoint ejection. Zero fields take the
// defaults (5 failures, 30s base ejection, 10% at most ejected).
type OutlierDetection struct {
	ConsecutiveFailures int      `json:"consecutive_failures,omitempty"`
	BaseEjection        Duration `json:"base_ejection,omitempty"`
	MaxEjectionPercent  int      `json:"max_ejection_percent,omitempty"`
}

// Route matches requests to a service and splits them over subsets. Its
// inline Settings override the service's.
type Route struct {
	// Name identifies the route in errors and telemetry; unnamed routes are
	// called "route[<index>]" in resolved views.
	Name  string           `json:"name,omitempty"`
	Match Match            `json:"match,omitempty"`
	Split []WeightedSubset `json:"split,omitempty"`
	// PrefixRewrite replaces the part of the path that PathPrefix (or
	// PathExact) matched before the request is sent; it starts with "/".
	// It applies to HTTP calls only: an RPC's method is sent as called.
	PrefixRewrite string `json:"prefix_rewrite,omitempty"`
	// RequestHeaders changes the request's headers (an RPC's metadata)
	// before it is sent, for every attempt of the call; the caller's own
	// request is left as it was.
	RequestHeaders *HeaderMutation `json:"request_headers,omitempty"`
	Settings
}

// HeaderMutation adds, sets and removes request headers: Add appends a
// value, Set replaces every value, Remove deletes the header. A header is
// named in one of them at most; hop-by-hop headers, Host,
// Content-Length, Content-Type, pseudo-headers, grpc-* and the mesh's own
// Inmesh-* headers cannot be changed.
type HeaderMutation struct {
	Add    map[string]string `json:"add,omitempty"`
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// Match selects requests. Every set field must match; a zero Match matches
// every request.
type Match struct {
	// Headers must all be present with exactly these values; names are
	// case-insensitive.
	Headers    map[string]string `json:"headers,omitempty"`
	PathPrefix string            `json:"path_prefix,omitempty"`
	// PathExact matches the whole path; PathRegex matches the whole path
	// against an RE2 expression (a full match, as if anchored at both
	// ends; at most 1024 bytes). At most one of the three path forms. All
	// three read the path as path_prefix does: the URL's path as the
	// client wrote it, decoded; an RPC's full method (/pkg.Svc/Method).
	PathExact string `json:"path_exact,omitempty"`
	PathRegex string `json:"path_regex,omitempty"`
	// Header conditions must all hold (Consul's service-router Header).
	Header []HeaderMatch `json:"header,omitempty"`
	// QueryParam conditions must all hold. An RPC has no query: a route
	// with a query_param condition never matches one.
	QueryParam []QueryParamMatch `json:"query_param,omitempty"`
	// Methods are HTTP methods, upper case in the resolved view.
	Methods []string `json:"methods,omitempty"`
}

// HeaderMatch is a condition on a request header: at most one of Present,
// Exact, Prefix, Suffix or Regex (none: present); Invert negates it. The
// name is case-insensitive (lower case in the resolved view). The
// condition holds when some value of a repeated header satisfies it
// (values are not split at commas); inverted, when none does, so an
// inverted condition holds on a request without the header. Regex is RE2,
// matching the whole value (Envoy's safe_regex). Values compare
// case-sensitively.
type HeaderMatch struct {
	Name    string `json:"name"`
	Present bool   `json:"present,omitempty"`
	Exact   string `json:"exact,omitempty"`
	Prefix  string `json:"prefix,omitempty"`
	Suffix  string `json:"suffix,omitempty"`
	Regex   string `json:"regex,omitempty"`
	Invert  bool   `json:"invert,omitempty"`
}

// QueryParamMatch is a condition on a query parameter: at most one of
// Present, Exact or Regex (none: present). Name and values are compared
// unescaped, as url.ParseQuery reads them; the condition holds when some
// value of a repeated parameter satisfies it.
type QueryParamMatch struct {
	Name    string `json:"name"`
	Present bool   `json:"present,omitempty"`
	Exact   string `json:"exact,omitempty"`
	Regex   string `json:"regex,omitempty"`
}

// WeightedSubset is one entry of a traffic split: a subset of the route's
// service, or (Service set) of another service, which is then called with
// that service's endpoints and identity. An empty Subset means every
// endpoint of the service.
type WeightedSubset struct {
	Service string `json:"service,omitempty"`
	Subset  string `json:"subset"`
	Weight  int    `json:"weight"`
	// Failover lists, in order, where the entry's calls go while it has
	// no healthy endpoint.
	Failover []Target `json:"failover,omitempty"`
}

// Target is a subset of a service: "" Service means the route's service,
// "" Subset every endpoint.
type Target struct {
	Service string `json:"service,omitempty"`
	Subset  string `json:"subset,omitempty"`
}

// Authorization says who may call a service.
type Authorization struct {
	// Default is deny or allow; "" means deny.
	Default string `json:"default,omitempty"`
	// Rules allow the calls they match, whatever Default says.
	Rules []Rule `json:"rules,omitempty"`
	// Deny is checked before the rules: a call it matches is denied,
	// whatever the rules allow.
	Deny []Rule `json:"deny,omitempty"`
	// Mode is enforce or audit; "" means enforce. Under audit every
	// decision is made, logged and counted, but every call goes through.
	Mode string `json:"mode,omitempty"`
}

// The values of [Authorization.Mode].
const (
	AuthzEnforce = "enforce"
	AuthzAudit   = "audit"
)

// Rule allows calls from some services to some paths and methods.
type Rule struct {
	From    []string `json:"from,omitempty"`    // caller service names; "*" is any
	Paths   []string `json:"paths,omitempty"`   // each covers itself and what lies below it ("/a": "/a", "/a/b", not "/ab"); empty is any
	Methods []string `json:"methods,omitempty"` // empty is any
}

// Duration is a time.Duration written as a Go duration string ("250ms") in
// YAML and JSON.
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String returns d in time.Duration notation, e.g. "250ms".
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText renders d as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// MarshalJSON renders d as a JSON string such as "250ms".
func (d Duration) MarshalJSON() ([]byte, error) { return []byte(`"` + d.String() + `"`), nil }

// UnmarshalText parses a Go duration string, so encoding/json and other
// text-based decoders can read a Document too.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := parseDuration(string(b))
	if err != nil {
		return fmt.Errorf("policy: %s", err)
	}
	*d = Duration(v)
	return nil
}

// Effective is the resolved view of the settings of a service or a route:
// defaults ⊕ service ⊕ route, with every default of the product filled in,
// as plain values. Treat it as read-only.
type Effective struct {
	Timeout            time.Duration     // 0: none beyond the caller's context
	Attempts           int               // >= 1; 1 means no retry
	PerTryTimeout      time.Duration     // 0: none
	BackoffInitial     time.Duration     // default 25ms
	BackoffMax         time.Duration     // default 250ms
	RetryOn            []string          // resolved list (the default list when absent and Attempts > 1)
	BudgetRatio        float64           // default 0.2
	BudgetMinPerSecond int               // default 10
	NonIdempotent      bool              // retry POST/PATCH too
	CircuitBreaker     *CircuitBreaker   // nil: none; fields defaulted (5, 30s, 1) when present
	OutlierDetection   *OutlierDetection // nil: none; fields defaulted (5, 30s, 10%) when present
	LoadBalancer       string            // default round_robin
	// Hash is the consistent hashing of ring_hash and maglev; nil for the
	// other load balancers. (One pointer keeps Effective small: every
	// resolved route has one.)
	Hash  *HashLB
	TLS   string // "" means: strict when the mesh has an identity
	Hedge *Hedge // nil: no hedging; Max defaulted (1), NonIdempotent set
	Fault *Fault // nil: no fault injection
	// ConnectTimeout bounds the dial and TLS handshake of a new
	// connection; 0: the transport's default.
	ConnectTimeout time.Duration
}

// HashLB is the consistent hashing of a ring_hash or maglev load balancer,
// resolved. Policies is the hash list of the most specific level that has
// one, whole (a level's hash without a load_balancer makes it ring_hash,
// unless a level below already chose maglev or ring_hash); it may be
// empty, and a request whose policies produce no value picks as random
// does. The ring sizes are the most specific level's ring_hash block,
// whole, defaults filled: 1024 and 8,388,608, the minimum no larger than
// the maximum (0 for maglev). TableSize is maglev's table, 65537 entries
// (0 for ring_hash).
type HashLB struct {
	Policies        []HashPolicy `json:"policies"`
	MinimumRingSize int          `json:"minimum_ring_size,omitempty"`
	MaximumRingSize int          `json:"maximum_ring_size,omitempty"`
	TableSize       int          `json:"table_size,omitempty"`
}

// ResolvedRoute is a route of a [ResolvedService].
type ResolvedRoute struct {
	// Name is the route's name, "route[<index>]" for an unnamed route of the
	// document, or "" for the implicit route of a service without routes.
	Name  string `json:"name"`
	Match Match  `json:"match"` // methods upper case, header condition names lower case
	// Split is empty for all endpoints of the service. When an entry or a
	// failover target of the split names another service, every entry and
	// target names the service it calls (the route's own filled in);
	// otherwise the split is the document's, each entry of the route's
	// own service (Service "").
	Split []WeightedSubset `json:"split,omitempty"`
	// PrefixRewrite and RequestHeaders are the route's actions on the
	// request it sends; RequestHeaders' names are lower case, nil when it
	// changes no header.
	PrefixRewrite  string          `json:"prefix_rewrite,omitempty"`
	RequestHeaders *HeaderMutation `json:"request_headers,omitempty"`
	Effective      Effective       `json:"effective"` // defaults ⊕ service ⊕ route
}

// ResolvedService is the resolved policy of one service. Treat it as read-only.
type ResolvedService struct {
	Name          string                       `json:"name"`
	Endpoints     []Endpoint                   `json:"endpoints,omitempty"`
	Subsets       map[string]map[string]string `json:"subsets,omitempty"`
	Effective     Effective                    `json:"effective"`     // defaults ⊕ service
	Routes        []ResolvedRoute              `json:"routes"`        // a service without routes gets one implicit route: Name "", Split empty
	HasRoutes     bool                         `json:"has_routes"`    // false when Routes is the implicit route
	Authorization Authorization                `json:"authorization"` // defaults ⊕ service; Default resolved ("deny" if empty)
	// HasAuthorization is false when neither the service nor the defaults
	// have an authorization block: the destination then serves every
	// authenticated caller of its trust domain.
	HasAuthorization bool `json:"has_authorization"`
	// Concurrency is the client-side limit toward the service (the
	// service's block, else the defaults'), defaults filled in; nil: none.
	Concurrency *Concurrency `json:"concurrency,omitempty"`
	// RateLimit is the limit the service's own mesh puts on its callers
	// (the service's block, else the defaults'), Burst filled in; nil: none.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// Provenance maps each part of the service's policy that the control
	// plane's own configuration decided (routes, split, subsets, timeout,
	// retry, connect_timeout, load_balancer, failover, concurrency,
	// outlier_detection) to what decided it, such as
	// "service-splitter/billing" for a Consul config entry; nil: the
	// document alone decided.
	Provenance map[string]string `json:"provenance,omitempty"`
	// Shadowed lists the fields of the document's block of the service
	// that the control plane's configuration overrides, by path, each with
	// what overrides it: "services.billing.routes (service-router/billing)".
	Shadowed []string `json:"shadowed,omitempty"`
}

// Snapshot is an immutable, validated document with its version and its
// resolved services. Never modify one, nor anything it points to: snapshots
// are shared between goroutines without locks and swapped whole.
type Snapshot struct {
	Doc      *Document                   `json:"document"`
	Version  string                      `json:"version"` // the document's label, or Hash when it has none
	Hash     string                      `json:"hash"`    // "sha256:" + 16 hex digits of the canonical JSON of Doc
	Source   string                      `json:"source"`  // "file:/abs/path", "inline", ...
	Loaded   time.Time                   `json:"loaded"`  // when the snapshot was made
	Services map[string]*ResolvedService `json:"services"`
	// Rejected names the services the control plane knows but has no
	// valid policy for: their block was rejected and no earlier valid
	// block of theirs is in force. Each maps to the reason. A mesh fails
	// calls to them rather than send them outside the mesh. Only sources
	// that keep one block per service (Consul KV) set it.
	Rejected map[string]string `json:"rejected,omitempty"`

	// memo is what NewSnapshotFrom keeps for the next build on this
	// snapshot; nil for a snapshot built otherwise.
	memo *buildMemo
}

// Event is what a [Source] reports: a new valid snapshot, or a rejection.
type Event struct {
	Snapshot *Snapshot // a new valid document (nil when rejected)
	Err      error     // the document was rejected; the previous one stays in force
}

// Source delivers policy snapshots, for example from a file or a control plane.
type Source interface {
	// Watch delivers events to emit until ctx ends, then returns ctx.Err().
	// emit is called from one goroutine at a time.
	Watch(ctx context.Context, emit func(Event)) error
	// String describes the source, e.g. "file:/etc/inmesh/mesh.yaml".
	String() string
}

// String renders w as {subset weight}, the service first when it names
// one ({service/subset weight}), then its failover targets.
func (w WeightedSubset) String() string {
	var b strings.Builder
	b.WriteByte('{')
	b.WriteString(Target{Service: w.Service, Subset: w.Subset}.String())
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(w.Weight))
	for i, t := range w.Failover {
		if i == 0 {
			b.WriteString(" failover:")
		}
		b.WriteByte(' ')
		b.WriteString(t.String())
	}
	b.WriteByte('}')
	return b.String()
}

// String renders t as service/subset: subset alone for the route's
// service, service alone for every endpoint of another.
func (t Target) String() string {
	switch {
	case t.Service == "":
		return t.Subset
	case t.Subset == "":
		return t.Service
	}
	return t.Service + "/" + t.Subset
}
