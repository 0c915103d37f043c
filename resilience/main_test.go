package resilience_test

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start is the time every fake clock of these tests starts at.
var start = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
