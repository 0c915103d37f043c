package blocking

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/internal/clock"
)

// Result is what one query returned.
type Result struct {
	Index       uint64        // X-Consul-Index of the answer
	LastContact time.Duration // X-Consul-LastContact: how stale the answer may be
}

// Query runs one blocking query that waits for a change after index (0:
// answer at once) and delivers its answer to the caller's own state before
// returning. An error means no answer: the caller must keep what it has.
type Query func(ctx context.Context, index uint64) (Result, error)

// Loop runs a Query again and again. Its zero value is not usable: set
// Query, then call Run. The other fields have defaults.
type Loop struct {
	Query Query
	// OnError is told about each failed query, with the number of failures
	// in a row and the wait before the next try. Optional.
	OnError func(err error, failures int, wait time.Duration)
	// MinInterval is the shortest time between the starts of two queries:
	// the rate limit under churn. Default 10ms (at most 100 queries/s).
	MinInterval time.Duration
	// BaseBackoff and MaxBackoff bound the jittered exponential backoff
	// after errors. Defaults 100ms and 5s.
	BaseBackoff, MaxBackoff time.Duration
	// Clock is the source of time; nil means the system clock.
	Clock clock.Clock
}

// Run queries until ctx ends and returns ctx.Err().
func (l *Loop) Run(ctx context.Context) error {
	c := l.Clock
	if c == nil {
		c = clock.System{}
	}
	minInterval := orDefault(l.MinInterval, 10*time.Millisecond)
	base := orDefault(l.BaseBackoff, 100*time.Millisecond)
	maxBackoff := orDefault(l.MaxBackoff, 5*time.Second)

	var index uint64
	failures := 0
	for {
		start := c.Now()
		res, err := l.Query(ctx, index)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var wait time.Duration
		if err != nil {
			failures++
			wait = Backoff(failures, base, maxBackoff)
			if !answered(err) {
				// No answer at all: the agent may have restarted, with
				// indexes that start again below ours, and a blocking
				// query at our index would wait for minutes. Read in
				// full first.
				index = 0
			}
			if l.OnError != nil {
				l.OnError(err, failures, wait)
			}
		} else {
			failures = 0
			index = NextIndex(index, res.Index)
			wait = minInterval - c.Now().Sub(start)
		}
		if wait > 0 {
			if err := clock.Sleep(ctx, c, wait); err != nil {
				return err
			}
		}
	}
}

// answered reports whether err is an HTTP answer of Consul (429, 500, ...)
// rather than the absence of one (refused, reset, timed out).
func answered(err error) bool {
	var se api.StatusError
	return errors.As(err, &se)
}

// NextIndex is the index of the next query after an answer with index got,
// following Consul's rules: back to 0 when the index went backwards, at
// least 1 otherwise.
func NextIndex(prev, got uint64) uint64 {
	switch {
	case got < prev:
		return 0
	case got == 0:
		return 1
	default:
		return got
	}
}

// Backoff is the wait after the n-th failure in a row (n >= 1): uniform in
// [d/2, d] with d = min(max, base*2^(n-1)), so that clients that failed
// together do not retry together.
func Backoff(n int, base, max time.Duration) time.Duration {
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(d-half)+1))
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
