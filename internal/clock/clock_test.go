package clock_test

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/inmesh/inmesh/internal/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSystemTimer(t *testing.T) {
	var c clock.Clock = clock.System{}
	before := time.Now()
	if now := c.Now(); now.Before(before) {
		t.Errorf("Now() = %v, before time.Now() %v", now, before)
	}
	tm := c.NewTimer(time.Millisecond)
	<-tm.C()
	if tm.Stop() {
		t.Error("Stop() after firing = true, want false")
	}
	tm = c.NewTimer(time.Hour)
	if !tm.Stop() {
		t.Error("Stop() of a pending timer = false, want true")
	}
}
