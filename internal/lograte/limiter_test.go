package lograte

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestAllow: one record per interval per key, the kept record counting
// those left out; other keys apart; a nil Limiter allows all.
func TestAllow(t *testing.T) {
	var l Limiter
	t0 := time.Unix(1000, 0)
	const every = time.Second
	for i, tc := range []struct {
		at         time.Duration
		a, b       string
		ok         bool
		suppressed int64
	}{
		{0, "billing", "timeout", true, 0},
		{1, "billing", "timeout", false, 0},
		{every - 1, "billing", "timeout", false, 0},
		{every - 1, "billing", "connect", true, 0},
		{every, "billing", "timeout", true, 2},
		{every, "billing", "timeout", false, 0},
		{3 * every, "billing", "timeout", true, 1},
	} {
		ok, n := l.Allow(t0.Add(tc.at), every, tc.a, tc.b)
		if ok != tc.ok || n != tc.suppressed {
			t.Errorf("%d: Allow(%v, %s, %s) = %v, %d; want %v, %d", i, tc.at, tc.a, tc.b, ok, n, tc.ok, tc.suppressed)
		}
	}
	var none *Limiter
	if ok, _ := none.Allow(t0, every, "a", "b"); !ok {
		t.Error("a nil Limiter refused a record")
	}
	if slotOf("ab", "c") == slotOf("a", "bc") {
		t.Error("the pair's parts run together")
	}
	if n := testing.AllocsPerRun(100, func() { l.Allow(t0, every, "billing", "timeout") }); n != 0 {
		t.Errorf("Allow allocates %v times", n)
	}
}
