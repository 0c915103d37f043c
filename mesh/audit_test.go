package mesh

import (
	"sync"
	"testing"
	"time"
)

func TestAuditLimiter(t *testing.T) {
	var l auditLimiter
	t0 := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	type step struct {
		at           time.Duration
		caller, rule string
		ok           bool
		suppressed   int64
	}
	for _, s := range []step{
		{0, "web", "deny[0]", true, 0},
		{0, "web", "deny[0]", false, 0},
		{time.Second, "web", "deny[0]", false, 0},
		{0, "web", "deny[1]", true, 0},   // another rule: its own slot
		{0, "admin", "deny[0]", true, 0}, // another caller: its own slot
		{auditLogEvery - 1, "web", "deny[0]", false, 0},
		{auditLogEvery, "web", "deny[0]", true, 3},
		{auditLogEvery, "web", "deny[0]", false, 0},
		{3 * auditLogEvery, "web", "deny[0]", true, 1},
		{3 * auditLogEvery, "admin", "deny[0]", true, 0},
	} {
		ok, n := l.allow(t0.Add(s.at), s.caller, s.rule)
		if ok != s.ok || n != s.suppressed {
			t.Fatalf("at %v, %s %s: allow = %v, %d; want %v, %d", s.at, s.caller, s.rule, ok, n, s.ok, s.suppressed)
		}
	}
}

// TestAuditLimiterConcurrent: of many would-be denials at the same time,
// one is logged, and the next line counts all the others.
func TestAuditLimiterConcurrent(t *testing.T) {
	var l auditLimiter
	t0 := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	const goroutines, each = 8, 100
	var wg sync.WaitGroup
	var mu sync.Mutex
	logged := 0
	for range goroutines {
		wg.Go(func() {
			for range each {
				if ok, _ := l.allow(t0, "web", "deny[0]"); ok {
					mu.Lock()
					logged++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if logged != 1 {
		t.Fatalf("%d lines logged, want 1", logged)
	}
	if ok, n := l.allow(t0.Add(auditLogEvery), "web", "deny[0]"); !ok || n != goroutines*each-1 {
		t.Fatalf("next line: %v, suppressed %d; want %d", ok, n, goroutines*each-1)
	}
}

func TestAuditLimiterNoAllocs(t *testing.T) {
	var l auditLimiter
	now := time.Now()
	if n := testing.AllocsPerRun(1000, func() { l.allow(now, "web", "deny[0]") }); n != 0 {
		t.Fatalf("%v allocations per call", n)
	}
}

func BenchmarkAuditLimiter(b *testing.B) {
	var l auditLimiter
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		l.allow(now, "web", "deny[0]")
	}
}
