package resilience_test

import (
	"sync"
	"testing"
	"time"

	"github.com/inmesh/inmesh/resilience"
)

func TestParseQuantile(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64 // 0: an error
	}{
		{"p50", 0.5},
		{"p95", 0.95},
		{"p99", 0.99},
		{"p99.9", 0.999},
		{"p75.5", 0.755},
		{"p49.9", 0},
		{"p100", 0},
		{"p99.95", 0},
		{"p9", 0},
		{"p", 0},
		{"95", 0},
		{"P95", 0},
		{"p95.", 0},
		{"p.95", 0},
		{"p9.5.", 0},
		{"p+95", 0},
		{"p 95", 0},
		{"p095", 0},
		{"p1e2", 0},
		{"", 0},
	} {
		got, err := resilience.ParseQuantile(tc.in)
		if tc.want == 0 {
			if err == nil {
				t.Errorf("ParseQuantile(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseQuantile(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestLatencyResolution(t *testing.T) {
	// One value, recorded enough: every quantile is the upper bound of its
	// bucket, above the value by at most 1/16 of it (or one unit, 1024 ns,
	// below 16 units).
	for d := time.Duration(0); d < 30*time.Minute; d = d*9/8 + 333 {
		lt := resilience.NewLatencyTracker(resilience.LatencyConfig{MinSamples: 1})
		lt.Record(d, start)
		got, ok := lt.Quantile(0.5, start)
		if !ok {
			t.Fatalf("%v: no quantile", d)
		}
		limit := d + max(d/16, 1024)
		if got <= d || got > limit {
			t.Fatalf("one sample of %v: quantile %v, want in (%v, %v]", d, got, d, limit)
		}
	}
}

func TestLatencyQuantiles(t *testing.T) {
	lt := resilience.NewLatencyTracker(resilience.LatencyConfig{})
	// 1ms .. 1000ms, once each.
	for i := 1; i <= 1000; i++ {
		lt.Record(time.Duration(i)*time.Millisecond, start)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 500 * time.Millisecond},
		{0.95, 950 * time.Millisecond},
		{0.99, 990 * time.Millisecond},
		{0.999, 999 * time.Millisecond},
		{1, 1000 * time.Millisecond},
	} {
		got, ok := lt.Quantile(tc.q, start)
		if !ok || got < tc.want || got > tc.want+tc.want/16 {
			t.Errorf("p%v = %v (%v), want %v to +6.25%%", tc.q*100, got, ok, tc.want)
		}
	}
}

func TestLatencyMinSamples(t *testing.T) {
	lt := resilience.NewLatencyTracker(resilience.LatencyConfig{})
	for i := range resilience.DefaultLatencyMinSamples {
		if _, ok := lt.Quantile(0.95, start); ok {
			t.Fatalf("a quantile after %d samples", i)
		}
		lt.Record(time.Millisecond, start)
	}
	if _, ok := lt.Quantile(0.95, start); !ok {
		t.Fatalf("no quantile after %d samples", resilience.DefaultLatencyMinSamples)
	}
	var none *resilience.LatencyTracker
	none.Record(time.Second, start)
	if _, ok := none.Quantile(0.5, start); ok {
		t.Fatal("a nil tracker has a quantile")
	}
}

func TestLatencyWindow(t *testing.T) {
	const w = 10 * time.Second
	lt := resilience.NewLatencyTracker(resilience.LatencyConfig{Window: w, MinSamples: 10})
	// The fake time: start is a multiple of the window (12:00:00), so
	// start+k*w begins window k.
	at := func(k float64) time.Time { return start.Add(time.Duration(k * float64(w))) }
	p50 := func(now time.Time) time.Duration {
		t.Helper()
		d, ok := lt.Quantile(0.5, now)
		if !ok {
			return -1
		}
		return d
	}
	near := func(d, want time.Duration) bool { return d >= want && d <= want+want/16 }

	for range 10 {
		lt.Record(10*time.Millisecond, at(0.5))
	}
	if d := p50(at(0.9)); !near(d, 10*time.Millisecond) {
		t.Fatalf("window 0: p50 %v", d)
	}
	// Window 1 still reads window 0's samples.
	if d := p50(at(1.9)); !near(d, 10*time.Millisecond) {
		t.Fatalf("window 1 before any sample of its own: p50 %v", d)
	}
	for range 30 {
		lt.Record(100*time.Millisecond, at(1.5))
	}
	if d := p50(at(1.9)); !near(d, 100*time.Millisecond) {
		t.Fatalf("window 1, 10 samples of 10ms and 30 of 100ms: p50 %v", d)
	}
	if d, _ := lt.Quantile(0.2, at(1.9)); !near(d, 10*time.Millisecond) {
		t.Fatalf("window 1: p20 %v, want window 0's 10ms", d)
	}
	// Window 2: window 0's samples are gone, window 1's stay.
	for range 10 {
		lt.Record(time.Second, at(2.5))
	}
	if d, _ := lt.Quantile(0.2, at(2.9)); !near(d, 100*time.Millisecond) {
		t.Fatalf("window 2: p20 %v, want window 1's 100ms", d)
	}
	if d, _ := lt.Quantile(0.99, at(2.9)); !near(d, time.Second) {
		t.Fatalf("window 2: p99 %v, want window 2's 1s", d)
	}
	// Read in window 3 without a sample of its own: window 2's only.
	if d, _ := lt.Quantile(0.01, at(3.5)); !near(d, time.Second) {
		t.Fatalf("window 3, unrecorded: p1 %v, want window 2's 1s", d)
	}
	// Window 4 and later, unrecorded: nothing recent.
	if d := p50(at(4.5)); d != -1 {
		t.Fatalf("two windows after the last sample: p50 %v, want none", d)
	}
	// After an idle spell, the old samples are cleared.
	for range 10 {
		lt.Record(time.Millisecond, at(7.5))
	}
	if d, _ := lt.Quantile(1, at(7.6)); !near(d, time.Millisecond) {
		t.Fatalf("after an idle spell: p100 %v, want the fresh 1ms only", d)
	}
	// A sample whose time is late (a slow recorder) goes to the current window.
	lt.Record(time.Minute, at(6.5))
	if d, _ := lt.Quantile(1, at(7.6)); !near(d, time.Minute) {
		t.Fatalf("a late sample: p100 %v", d)
	}
	// Windows rotate one by one without losing the previous one.
	for k := 8; k < 20; k++ {
		for range 10 {
			lt.Record(time.Duration(k)*time.Millisecond, at(float64(k)+0.5))
		}
		lo, _ := lt.Quantile(0.01, at(float64(k)+0.9))
		hi, _ := lt.Quantile(1, at(float64(k)+0.9))
		if k > 8 && (!near(lo, time.Duration(k-1)*time.Millisecond) || !near(hi, time.Duration(k)*time.Millisecond)) {
			t.Fatalf("window %d: p1 %v, p100 %v; want windows %d and %d only", k, lo, hi, k-1, k)
		}
	}
}

func TestLatencyConcurrent(t *testing.T) {
	lt := resilience.NewLatencyTracker(resilience.LatencyConfig{Window: time.Second})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				now := start.Add(time.Duration(i) * time.Millisecond)
				lt.Record(time.Duration(g+1)*time.Millisecond, now)
				if _, ok := lt.Quantile(0.95, now); !ok && i > 100 {
					t.Errorf("no quantile at sample %d", i)
					return
				}
			}
		})
	}
	wg.Wait()
	if d, ok := lt.Quantile(1, start.Add(2*time.Second)); !ok || d > 5*time.Millisecond {
		t.Fatalf("p100 %v (%v), want at most 4ms and a bucket", d, ok)
	}
}

func TestLatencyAllocations(t *testing.T) {
	lt := resilience.NewLatencyTracker(resilience.LatencyConfig{})
	now := start
	if n := testing.AllocsPerRun(100, func() {
		now = now.Add(time.Second)
		lt.Record(20*time.Millisecond, now)
		lt.Quantile(0.95, now)
	}); n != 0 {
		t.Fatalf("Record and Quantile allocate %v times", n)
	}
}

func BenchmarkLatencyRecord(b *testing.B) {
	lt := resilience.NewLatencyTracker(resilience.LatencyConfig{})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		lt.Record(time.Duration(i&1023)*time.Microsecond*50, start)
	}
}

func BenchmarkLatencyRecordParallel(b *testing.B) {
	lt := resilience.NewLatencyTracker(resilience.LatencyConfig{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			lt.Record(time.Duration(i&1023)*time.Microsecond*50, start)
		}
	})
}

func BenchmarkLatencyQuantile(b *testing.B) {
	lt := resilience.NewLatencyTracker(resilience.LatencyConfig{})
	for i := range 10000 {
		lt.Record(time.Duration(i%1000)*time.Millisecond, start)
	}
	b.ReportAllocs()
	for b.Loop() {
		lt.Quantile(0.95, start)
	}
}
