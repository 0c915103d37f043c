package resilience_test

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/inmesh/inmesh/resilience"
)

func httpStatus(s int) resilience.Outcome { return resilience.Outcome{HTTPStatus: s} }

func grpcCode(c codes.Code) resilience.Outcome {
	return resilience.Outcome{GRPCCode: resilience.GRPCCode(c), IsGRPC: true}
}

func errKind(k resilience.ErrKind) resilience.Outcome { return resilience.Outcome{Err: k} }

func TestRetryOnMatch(t *testing.T) {
	tests := []struct {
		names []string
		match []resilience.Outcome
		miss  []resilience.Outcome
	}{
		{
			names: nil,
			miss:  []resilience.Outcome{errKind(resilience.ErrConnect), httpStatus(503), grpcCode(codes.Unavailable), {}},
		},
		{
			names: []string{"connect-failure"},
			match: []resilience.Outcome{errKind(resilience.ErrConnect)},
			miss:  []resilience.Outcome{errKind(resilience.ErrReset), errKind(resilience.ErrTimeout), errKind(resilience.ErrTLS), httpStatus(503)},
		},
		{
			names: []string{"reset"},
			match: []resilience.Outcome{errKind(resilience.ErrReset), errKind(resilience.ErrTimeout)},
			miss:  []resilience.Outcome{errKind(resilience.ErrConnect), errKind(resilience.ErrTLS), httpStatus(502)},
		},
		{
			names: []string{"per-try-timeout"},
			match: []resilience.Outcome{errKind(resilience.ErrTimeout)},
			miss:  []resilience.Outcome{errKind(resilience.ErrConnect), grpcCode(codes.DeadlineExceeded)},
		},
		{
			names: []string{"5xx"},
			match: []resilience.Outcome{httpStatus(500), httpStatus(503), httpStatus(599),
				errKind(resilience.ErrConnect), errKind(resilience.ErrReset), errKind(resilience.ErrTimeout)},
			miss: []resilience.Outcome{httpStatus(499), httpStatus(600), httpStatus(200), grpcCode(codes.Internal), errKind(resilience.ErrTLS)},
		},
		{
			names: []string{"gateway-error"},
			match: []resilience.Outcome{httpStatus(502), httpStatus(503), httpStatus(504), errKind(resilience.ErrTimeout)},
			miss:  []resilience.Outcome{httpStatus(500), httpStatus(501), httpStatus(505), errKind(resilience.ErrConnect)},
		},
		{
			names: []string{"retriable-4xx"},
			match: []resilience.Outcome{httpStatus(409)},
			miss:  []resilience.Outcome{httpStatus(408), httpStatus(429)},
		},
		{
			names: []string{"100", "429", "599"},
			match: []resilience.Outcome{httpStatus(100), httpStatus(429), httpStatus(599)},
			miss:  []resilience.Outcome{httpStatus(101), httpStatus(0), httpStatus(-1), httpStatus(1 << 20)},
		},
		{
			names: []string{"unavailable", "resource-exhausted"},
			match: []resilience.Outcome{grpcCode(codes.Unavailable), grpcCode(codes.ResourceExhausted)},
			miss: []resilience.Outcome{
				grpcCode(codes.OK), grpcCode(codes.Internal), grpcCode(codes.Code(99)),
				{GRPCCode: resilience.CodeUnavailable}, // not gRPC: the code is not meaningful
			},
		},
		{
			names: []string{"connect-failure", "reset", "per-try-timeout", "5xx", "unavailable"},
			miss:  []resilience.Outcome{errKind(resilience.ErrTLS), errKind(resilience.ErrCanceled), errKind(resilience.ErrKind(200))},
		},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.names), func(t *testing.T) {
			r, err := resilience.ParseRetryOn(tt.names)
			if err != nil {
				t.Fatalf("ParseRetryOn(%q) = %v", tt.names, err)
			}
			for _, o := range tt.match {
				if !r.Match(o) {
					t.Errorf("Match(%+v) = false, want true", o)
				}
			}
			for _, o := range tt.miss {
				if r.Match(o) {
					t.Errorf("Match(%+v) = true, want false", o)
				}
			}
		})
	}
}

func TestRetryOnGRPCNames(t *testing.T) {
	names := map[string]codes.Code{
		"cancelled": codes.Canceled, "unknown": codes.Unknown, "invalid-argument": codes.InvalidArgument,
		"deadline-exceeded": codes.DeadlineExceeded, "not-found": codes.NotFound, "already-exists": codes.AlreadyExists,
		"permission-denied": codes.PermissionDenied, "resource-exhausted": codes.ResourceExhausted,
		"failed-precondition": codes.FailedPrecondition, "aborted": codes.Aborted, "out-of-range": codes.OutOfRange,
		"unimplemented": codes.Unimplemented, "internal": codes.Internal, "unavailable": codes.Unavailable,
		"data-loss": codes.DataLoss, "unauthenticated": codes.Unauthenticated,
	}
	for name, code := range names {
		r, err := resilience.ParseRetryOn([]string{name})
		if err != nil {
			t.Errorf("ParseRetryOn(%q) = %v", name, err)
			continue
		}
		for c := codes.OK; c <= codes.Unauthenticated; c++ {
			if got := r.Match(grpcCode(c)); got != (c == code) {
				t.Errorf("%q matches %v: %v, want %v", name, c, got, c == code)
			}
		}
	}
}

func TestParseRetryOnErrors(t *testing.T) {
	tests := []struct {
		names   []string
		wantErr string
	}{
		{names: []string{"503", "reset", "503x"}, wantErr: `retry_on[2]: unknown condition "503x"`},
		{names: []string{"5XX"}, wantErr: `retry_on[0]: unknown condition "5XX"`},
		{names: []string{"Unavailable"}, wantErr: `retry_on[0]: unknown condition "Unavailable"`},
		{names: []string{"reset", "deadline_exceeded"}, wantErr: `retry_on[1]: unknown condition "deadline_exceeded"`},
		{names: []string{"canceled"}, wantErr: `retry_on[0]: unknown condition "canceled"`},
		{names: []string{"ok"}, wantErr: `retry_on[0]: unknown condition "ok"`},
		{names: []string{"600"}, wantErr: `retry_on[0]: unknown condition "600"`},
		{names: []string{"099"}, wantErr: `retry_on[0]: unknown condition "099"`},
		{names: []string{"0503"}, wantErr: `retry_on[0]: unknown condition "0503"`},
		{names: []string{"50"}, wantErr: `retry_on[0]: unknown condition "50"`},
		{names: []string{"+50"}, wantErr: `retry_on[0]: unknown condition "+50"`},
		{names: []string{" 503"}, wantErr: `retry_on[0]: unknown condition " 503"`},
		{names: []string{""}, wantErr: `retry_on[0]: unknown condition ""`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.names), func(t *testing.T) {
			r, err := resilience.ParseRetryOn(tt.names)
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("ParseRetryOn(%q) error = %v, want %s", tt.names, err, tt.wantErr)
			}
			var ce *resilience.ConditionError
			if !errors.As(err, &ce) || ce.Index != len(tt.names)-1 || ce.Name != tt.names[len(tt.names)-1] {
				t.Errorf("errors.As(%v) = %+v, want index %d", err, ce, len(tt.names)-1)
			}
			if r != (resilience.RetryOn{}) {
				t.Error("ParseRetryOn returned a non-zero RetryOn with an error")
			}
		})
	}
}

func TestRetryOnComparable(t *testing.T) {
	a := resilience.MustParseRetryOn("gateway-error", "reset", "unavailable")
	b := resilience.MustParseRetryOn("unavailable", "502", "503", "504", "reset", "503")
	if a != b {
		t.Error("equal condition sets compare unequal")
	}
	if a == resilience.MustParseRetryOn("gateway-error", "reset") {
		t.Error("different condition sets compare equal")
	}
}

func TestDefaultRetryOn(t *testing.T) {
	want := resilience.MustParseRetryOn("connect-failure", "reset", "502", "503", "504", "unavailable")
	if resilience.DefaultRetryOn() != want {
		t.Error("DefaultRetryOn() differs from its documented list")
	}
}

func TestMustParseRetryOnPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("MustParseRetryOn(bad) did not panic")
		}
	}()
	resilience.MustParseRetryOn("bad")
}

func TestIsFailure(t *testing.T) {
	tests := []struct {
		o    resilience.Outcome
		want bool
	}{
		{o: resilience.Outcome{}, want: false},
		{o: errKind(resilience.ErrConnect), want: true},
		{o: errKind(resilience.ErrReset), want: true},
		{o: errKind(resilience.ErrTimeout), want: true},
		{o: errKind(resilience.ErrTLS), want: true},
		{o: errKind(resilience.ErrCanceled), want: false}, // neutral
		{o: httpStatus(200), want: false},
		{o: httpStatus(404), want: false},
		{o: httpStatus(429), want: false},
		{o: httpStatus(499), want: false},
		{o: httpStatus(500), want: true},
		{o: httpStatus(503), want: true},
		{o: httpStatus(599), want: true},
		{o: httpStatus(600), want: false},
		{o: grpcCode(codes.OK), want: false},
		{o: grpcCode(codes.Unavailable), want: true},
		{o: grpcCode(codes.Internal), want: true},
		{o: grpcCode(codes.Unknown), want: true},
		{o: grpcCode(codes.DeadlineExceeded), want: true},
		{o: grpcCode(codes.ResourceExhausted), want: false},
		{o: grpcCode(codes.NotFound), want: false},
		{o: grpcCode(codes.PermissionDenied), want: false},
		{o: resilience.Outcome{GRPCCode: resilience.CodeUnavailable}, want: false}, // not gRPC
	}
	for _, tt := range tests {
		if got := resilience.IsFailure(tt.o); got != tt.want {
			t.Errorf("IsFailure(%+v) = %v, want %v", tt.o, got, tt.want)
		}
	}
}

func TestNeutral(t *testing.T) {
	for _, o := range []resilience.Outcome{
		{}, errKind(resilience.ErrConnect), errKind(resilience.ErrTimeout), httpStatus(200), httpStatus(503),
		grpcCode(codes.OK), grpcCode(codes.Canceled), // the destination's own Canceled is an answer
	} {
		if resilience.Neutral(o) {
			t.Errorf("Neutral(%+v) = true, want false", o)
		}
	}
	if o := errKind(resilience.ErrCanceled); !resilience.Neutral(o) || resilience.IsFailure(o) {
		t.Errorf("a canceled attempt: Neutral %v, IsFailure %v; want true, false", resilience.Neutral(o), resilience.IsFailure(o))
	}
}

// TestOverloaded: the answers by which a destination says it is up but
// sheds load; the same status without the hint is not one (a failure).
func TestOverloaded(t *testing.T) {
	tests := []struct {
		name       string
		o          resilience.Outcome
		retryAfter bool
		want       bool
	}{
		{"429", httpStatus(429), false, true},
		{"429 with Retry-After", httpStatus(429), true, true},
		{"503 with Retry-After", httpStatus(503), true, true},
		{"plain 503", httpStatus(503), false, false},
		{"502 with Retry-After", httpStatus(502), true, false},
		{"500 with Retry-After", httpStatus(500), true, false},
		{"200 with Retry-After", httpStatus(200), true, false},
		{"ResourceExhausted", grpcCode(codes.ResourceExhausted), false, true},
		{"Unavailable with pushback", grpcCode(codes.Unavailable), true, true},
		{"plain Unavailable", grpcCode(codes.Unavailable), false, false},
		{"Internal with pushback", grpcCode(codes.Internal), true, false},
		{"OK with pushback", grpcCode(codes.OK), true, false},
		{"Unavailable, not gRPC", resilience.Outcome{GRPCCode: resilience.CodeUnavailable}, true, false},
		{"a reset", errKind(resilience.ErrReset), true, false},
		{"canceled", errKind(resilience.ErrCanceled), true, false},
	}
	for _, tt := range tests {
		if got := resilience.Overloaded(tt.o, tt.retryAfter); got != tt.want {
			t.Errorf("%s: Overloaded(%+v, %v) = %v, want %v", tt.name, tt.o, tt.retryAfter, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = resilience.Overloaded(httpStatus(503), true) }); n != 0 {
		t.Errorf("Overloaded allocates %v times", n)
	}
}

func TestErrKindString(t *testing.T) {
	want := map[resilience.ErrKind]string{
		resilience.ErrNone: "none", resilience.ErrConnect: "connect", resilience.ErrReset: "reset",
		resilience.ErrTimeout: "timeout", resilience.ErrTLS: "tls", resilience.ErrCanceled: "canceled", 99: "unknown",
	}
	for k, s := range want {
		if got := k.String(); got != s {
			t.Errorf("ErrKind(%d).String() = %q, want %q", k, got, s)
		}
	}
}

func FuzzParseRetryOn(f *testing.F) {
	for _, s := range []string{"503", "5xx", "unavailable", "reset", "503x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		r, err := resilience.ParseRetryOn([]string{name})
		if err != nil && r != (resilience.RetryOn{}) {
			t.Errorf("ParseRetryOn(%q) returned a condition set with an error", name)
		}
		if err == nil && r == (resilience.RetryOn{}) {
			t.Errorf("ParseRetryOn(%q) accepted a name that matches nothing", name)
		}
	})
}

func BenchmarkRetryOnMatch(b *testing.B) {
	r := resilience.DefaultRetryOn()
	outcomes := []resilience.Outcome{httpStatus(200), httpStatus(503), errKind(resilience.ErrConnect), grpcCode(codes.Unavailable)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.Match(outcomes[i%len(outcomes)])
		i++
	}
}

func BenchmarkIsFailure(b *testing.B) {
	outcomes := []resilience.Outcome{httpStatus(200), httpStatus(503), errKind(resilience.ErrConnect), grpcCode(codes.Unavailable)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		resilience.IsFailure(outcomes[i%len(outcomes)])
		i++
	}
}
