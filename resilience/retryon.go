package resilience

import "fmt"

// Outcome describes how one attempt ended, transport-agnostic. The zero value
// is an attempt that produced a response with neither an HTTP status nor a gRPC
// code, which is neither a failure nor retryable.
type Outcome struct {
	Err        ErrKind  // ErrNone when the attempt produced a response
	HTTPStatus int      // 0 when no HTTP status
	GRPCCode   GRPCCode // CodeOK when none
	IsGRPC     bool     // GRPCCode is meaningful
}

// ErrKind classifies an attempt that produced no response.
type ErrKind uint8

// Error kinds, in the order of the request flow.
const (
	ErrNone     ErrKind = iota // the attempt produced a response
	ErrConnect                 // dial failed / connection refused
	ErrReset                   // connection broke after the request was sent (reset, EOF, malformed answer)
	ErrTimeout                 // per-try timeout fired
	ErrTLS                     // handshake or peer identity failed
	ErrCanceled                // the caller canceled the call: the attempt proves nothing
)

// String returns the kind's lower-case name: "none", "connect", "reset",
// "timeout", "tls", "canceled", or "unknown".
func (k ErrKind) String() string {
	switch k {
	case ErrNone:
		return "none"
	case ErrConnect:
		return "connect"
	case ErrReset:
		return "reset"
	case ErrTimeout:
		return "timeout"
	case ErrTLS:
		return "tls"
	case ErrCanceled:
		return "canceled"
	}
	return "unknown"
}

// Status codes a RetryOn can hold: 100..599.
const (
	minStatus = 100
	maxStatus = 599
)

// RetryOn is a parsed, immutable set of retry conditions. The zero value
// matches nothing. RetryOn is a small comparable value: copy it freely and
// compare with ==.
type RetryOn struct {
	status [(maxStatus - minStatus + 64) / 64]uint64 // bit s-minStatus for HTTP status s
	grpc   uint32                                    // bit c for gRPC code c
	kinds  uint8                                     // bit k for ErrKind k
}

// ConditionError reports a retry_on entry that names no known condition.
// Index is the position of the entry in the list given to [ParseRetryOn].
type ConditionError struct {
	Index int
	Name  string
}

// Error returns `retry_on[<Index>]: unknown condition "<Name>"`, so a caller
// can prefix the path of the list (for example "services.billing.retry.").
func (e *ConditionError) Error() string {
	return fmt.Sprintf("retry_on[%d]: unknown condition %q", e.Index, e.Name)
}

// grpcCodeNames maps the kebab-case condition name of each gRPC code.
var grpcCodeNames = map[string]GRPCCode{
	"cancelled":           CodeCanceled,
	"unknown":             CodeUnknown,
	"invalid-argument":    CodeInvalidArgument,
	"deadline-exceeded":   CodeDeadlineExceeded,
	"not-found":           CodeNotFound,
	"already-exists":      CodeAlreadyExists,
	"permission-denied":   CodePermissionDenied,
	"resource-exhausted":  CodeResourceExhausted,
	"failed-precondition": CodeFailedPrecondition,
	"aborted":             CodeAborted,
	"out-of-range":        CodeOutOfRange,
	"unimplemented":       CodeUnimplemented,
	"internal":            CodeInternal,
	"unavailable":         CodeUnavailable,
	"data-loss":           CodeDataLoss,
	"unauthenticated":     CodeUnauthenticated,
}

// ParseRetryOn parses retry condition names. Names are case-sensitive:
//
//   - "connect-failure": the dial failed ([ErrConnect]);
//   - "reset": no answer came back: the connection broke after the request
//     was sent ([ErrReset]) or the per-try timeout fired ([ErrTimeout]), as
//     Envoy's "reset" counts a read timeout;
//   - "per-try-timeout": the per-try timeout fired ([ErrTimeout]);
//   - "5xx": any HTTP status 500..599, and, as Envoy's "5xx", any attempt
//     that got no answer ([ErrConnect], [ErrReset], [ErrTimeout]);
//   - "gateway-error": HTTP 502, 503 and 504, and a per-try timeout (the 504
//     a proxy would have answered);
//   - "retriable-4xx": HTTP 409;
//   - a three-digit HTTP status "100".."599";
//   - a gRPC code name in kebab case: "cancelled", "unknown",
//     "invalid-argument", "deadline-exceeded", "not-found", "already-exists",
//     "permission-denied", "resource-exhausted", "failed-precondition",
//     "aborted", "out-of-range", "unimplemented", "internal", "unavailable",
//     "data-loss", "unauthenticated".
//
// A TLS failure ([ErrTLS]) and the caller's cancellation ([ErrCanceled]) are
// never retried: no condition names them.
// Duplicates are allowed; an empty or nil list gives the zero RetryOn, which
// matches nothing. A bad entry is reported as a *[ConditionError].
func ParseRetryOn(names []string) (RetryOn, error) {
	var r RetryOn
	for i, name := range names {
		if !r.add(name) {
			return RetryOn{}, &ConditionError{Index: i, Name: name}
		}
	}
	return r, nil
}

// MustParseRetryOn is like [ParseRetryOn] but panics on error. It is meant for
// condition lists fixed in the source.
func MustParseRetryOn(names ...string) RetryOn {
	r, err := ParseRetryOn(names)
	if err != nil {
		panic("resilience: " + err.Error())
	}
	return r
}

// add adds the condition name to r and reports whether the name is known.
func (r *RetryOn) add(name string) bool {
	switch name {
	case "connect-failure":
		r.kinds |= 1 << ErrConnect
	case "reset":
		r.kinds |= 1<<ErrReset | 1<<ErrTimeout
	case "per-try-timeout":
		r.kinds |= 1 << ErrTimeout
	case "5xx":
		r.kinds |= 1<<ErrConnect | 1<<ErrReset | 1<<ErrTimeout
		for s := 500; s <= 599; s++ {
			r.addStatus(s)
		}
	case "gateway-error":
		r.kinds |= 1 << ErrTimeout
		r.addStatus(502)
		r.addStatus(503)
		r.addStatus(504)
	case "retriable-4xx":
		r.addStatus(409)
	default:
		if s, ok := parseStatus(name); ok {
			r.addStatus(s)
			return true
		}
		c, ok := grpcCodeNames[name]
		if !ok {
			return false
		}
		r.grpc |= 1 << c
	}
	return true
}

// parseStatus parses exactly three decimal digits naming a status 100..599.
func parseStatus(s string) (int, bool) {
	if len(s) != 3 {
		return 0, false
	}
	n := 0
	for i := range 3 {
		d := s[i]
		if d < '0' || d > '9' {
			return 0, false
		}
		n = n*10 + int(d-'0')
	}
	return n, n >= minStatus && n <= maxStatus
}

func (r *RetryOn) addStatus(s int) {
	i := s - minStatus
	r.status[i/64] |= 1 << (i % 64)
}

func (r RetryOn) hasStatus(s int) bool {
	if s < minStatus || s > maxStatus {
		return false
	}
	i := s - minStatus
	return r.status[i/64]&(1<<(i%64)) != 0
}

// Match reports whether the outcome is one r retries: its error kind, its HTTP
// status or (when IsGRPC) its gRPC code is in r. HOT: no allocation.
func (r RetryOn) Match(o Outcome) bool {
	if o.Err != ErrNone {
		return o.Err < 8 && r.kinds&(1<<o.Err) != 0
	}
	if o.IsGRPC && o.GRPCCode < 32 && r.grpc&(1<<o.GRPCCode) != 0 {
		return true
	}
	return r.hasStatus(o.HTTPStatus)
}

// DefaultRetryOn is used when attempts > 1 and retry_on is absent:
// connect-failure, reset, 502, 503, 504, unavailable.
func DefaultRetryOn() RetryOn { return defaultRetryOn }

var defaultRetryOn = MustParseRetryOn("connect-failure", "reset", "502", "503", "504", "unavailable")

// Neutral reports whether an outcome proves nothing about the destination,
// so that it must be counted as neither success nor failure by the circuit
// breaker ([Ticket.Release]) and outlier detection (no report): the caller
// canceled the attempt ([ErrCanceled]). HOT: no allocation.
func Neutral(o Outcome) bool { return o.Err == ErrCanceled }

// Overloaded reports whether an outcome is a destination's answer that it
// is up and asks for less load: HTTP 429, gRPC ResourceExhausted, or an
// HTTP 503 or gRPC Unavailable that says when to try again (retryAfter: an
// HTTP Retry-After that parses, a gRPC retry pushback of a delay). Such an
// answer is neutral, as a canceled attempt is ([Neutral]): neither failure
// nor success for the breaker and outlier detection, because the
// destination answered, and shedding load is the concurrency limit's
// business, which counts it as a drop. A 503 or Unavailable without the
// hint stays a failure ([IsFailure]). HOT: no allocation.
func Overloaded(o Outcome, retryAfter bool) bool {
	if o.Err != ErrNone {
		return false
	}
	if o.IsGRPC {
		return o.GRPCCode == CodeResourceExhausted || o.GRPCCode == CodeUnavailable && retryAfter
	}
	return o.HTTPStatus == 429 || o.HTTPStatus == 503 && retryAfter
}

// IsFailure reports whether an outcome counts against the circuit breaker and
// outlier detection: any attempt without a response (connect, reset, timeout
// or TLS error), an HTTP 5xx, or a gRPC Unavailable, Internal, Unknown or
// DeadlineExceeded. An attempt its caller canceled ([ErrCanceled]) is no
// failure, and no success either: see [Neutral]; nor is an answer
// [Overloaded] says sheds load, which the caller checks first. HOT: no
// allocation.
func IsFailure(o Outcome) bool {
	if o.Err != ErrNone {
		return o.Err != ErrCanceled
	}
	if o.HTTPStatus >= 500 && o.HTTPStatus <= 599 {
		return true
	}
	if o.IsGRPC {
		switch o.GRPCCode {
		case CodeUnavailable, CodeInternal, CodeUnknown, CodeDeadlineExceeded:
			return true
		}
	}
	return false
}
