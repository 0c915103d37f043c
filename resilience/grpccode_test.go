package resilience_test

import (
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/inmesh/inmesh/resilience"
)

// TestGRPCCodeIsGRPCsNumbering: every code has grpc-go's number and name,
// so that adapters convert with a plain conversion.
func TestGRPCCodeIsGRPCsNumbering(t *testing.T) {
	ours := []resilience.GRPCCode{
		resilience.CodeOK, resilience.CodeCanceled, resilience.CodeUnknown, resilience.CodeInvalidArgument,
		resilience.CodeDeadlineExceeded, resilience.CodeNotFound, resilience.CodeAlreadyExists,
		resilience.CodePermissionDenied, resilience.CodeResourceExhausted, resilience.CodeFailedPrecondition,
		resilience.CodeAborted, resilience.CodeOutOfRange, resilience.CodeUnimplemented, resilience.CodeInternal,
		resilience.CodeUnavailable, resilience.CodeDataLoss, resilience.CodeUnauthenticated,
	}
	theirs := []codes.Code{
		codes.OK, codes.Canceled, codes.Unknown, codes.InvalidArgument,
		codes.DeadlineExceeded, codes.NotFound, codes.AlreadyExists,
		codes.PermissionDenied, codes.ResourceExhausted, codes.FailedPrecondition,
		codes.Aborted, codes.OutOfRange, codes.Unimplemented, codes.Internal,
		codes.Unavailable, codes.DataLoss, codes.Unauthenticated,
	}
	for i, c := range ours {
		if uint32(c) != uint32(theirs[i]) || c.String() != theirs[i].String() {
			t.Errorf("code %d: ours %d %q, grpc-go's %d %q", i, uint32(c), c, uint32(theirs[i]), theirs[i])
		}
	}
	for _, n := range []uint32{17, 99, 1 << 31} {
		if got, want := resilience.GRPCCode(n).String(), codes.Code(n).String(); got != want {
			t.Errorf("GRPCCode(%d) = %q, grpc-go says %q", n, got, want)
		}
	}
}

func TestGRPCCodeStringDoesNotAllocate(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = resilience.CodeResourceExhausted.String() }); n != 0 {
		t.Errorf("String allocates %v times", n)
	}
}

func TestParseGRPCCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		want resilience.GRPCCode
		ok   bool
	}{
		{"unavailable", resilience.CodeUnavailable, true},
		{"resource-exhausted", resilience.CodeResourceExhausted, true},
		{"cancelled", resilience.CodeCanceled, true},
		{"unauthenticated", resilience.CodeUnauthenticated, true},
		{"ok", 0, false},
		{"Unavailable", 0, false},
		{"resource_exhausted", 0, false},
		{"14", 0, false},
		{"", 0, false},
	} {
		got, ok := resilience.ParseGRPCCode(tc.name)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseGRPCCode(%q) = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}
