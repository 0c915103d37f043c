package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inmesh/inmesh/mesh"
)

// ---- the overload phase: recommendations saturated, the adaptive limit in front ----

// overloadResult is what the overload phase saw.
type overloadResult struct {
	offered, ok, rejected, shed, other int
	backend                            int64 // requests recommendations received
	limit                              int   // the concurrency limit enrollment learned
	d                                  time.Duration
}

// capacity is what recommendations can serve in the phase.
func (o *overloadResult) capacity() float64 {
	return recommendationCapacity * float64(o.d/recommendationTime)
}

// overload offers recommendations 1.5x its capacity for d, open loop (every
// call at its time, whatever the earlier ones do), and counts the answers.
func overload(ctx context.Context, m *mesh.Mesh, hits *atomic.Int64, d time.Duration) *overloadResult {
	res := &overloadResult{d: d}
	perSecond := 1.5 * recommendationCapacity * float64(time.Second/recommendationTime)
	n := int(perSecond * d.Seconds())
	interval := time.Duration(float64(time.Second) / perSecond)
	client := m.HTTPClient()
	before := hits.Load()
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		res.offered++
		wg.Go(func() {
			r := call(ctx, client, http.MethodGet, "http://recommendations/next")
			var ce *mesh.CallError
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.As(r.err, &ce) && ce.Layer == mesh.LayerOverload:
				res.shed++
			case r.err == nil && r.code == http.StatusOK:
				res.ok++
			case r.err == nil && r.code == http.StatusServiceUnavailable:
				res.rejected++
			default:
				res.other++
			}
		})
	}
	wg.Wait()
	res.backend = hits.Load() - before
	if req, err := http.NewRequest(http.MethodGet, "http://recommendations/next", nil); err == nil {
		if ex, err := m.Explain(req); err == nil && ex.Concurrency != nil {
			res.limit = ex.Concurrency.Limit
		}
	}
	return res
}

func (o *overloadResult) report(out io.Writer) {
	fmt.Fprintf(out, "\nrecommendations saturated (%d at once, %v each: %.0f calls/s), offered 1.5x for %v:\n",
		recommendationCapacity, recommendationTime, o.capacity()/o.d.Seconds(), o.d)
	fmt.Fprintf(out, "  goodput %.0f calls/s = %.0f%% of its capacity; %d of %d calls answered, %d shed at layer overload, %d answered 503 by the backend\n",
		float64(o.ok)/o.d.Seconds(), 100*float64(o.ok)/o.capacity(), o.ok, o.offered, o.shed, o.rejected)
	if o.other > 0 {
		fmt.Fprintf(out, "  %d calls failed otherwise\n", o.other)
	}
	fmt.Fprintf(out, "  the adaptive concurrency limit learned %d in flight (the backend has %d slots)\n", o.limit, recommendationCapacity)
}
