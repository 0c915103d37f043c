package blocking

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestNextIndex(t *testing.T) {
	tests := []struct {
		prev, got, want uint64
	}{
		{0, 5, 5},
		{5, 7, 7},
		{7, 7, 7}, // timeout of a blocking query: same index
		{7, 3, 0}, // backwards: reset
		{0, 0, 1}, // zero: never below 1
		{3, 0, 0}, // zero after a higher index is backwards too
		{1, 1, 1},
	}
	for _, tc := range tests {
		if got := NextIndex(tc.prev, tc.got); got != tc.want {
			t.Errorf("NextIndex(%d, %d) = %d, want %d", tc.prev, tc.got, got, tc.want)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	base, max := 100*time.Millisecond, 5*time.Second
	for n := 1; n <= 12; n++ {
		d := base << (n - 1)
		if d > max || n > 8 {
			d = max
		}
		for range 200 {
			got := Backoff(n, base, max)
			if got < d/2 || got > d {
				t.Fatalf("Backoff(%d) = %v, want in [%v, %v]", n, got, d/2, d)
			}
		}
	}
}

// step is one scripted answer of the fake Consul.
type step struct {
	status int    // 0: 200
	index  uint64 // X-Consul-Index
}

// fakeConsul answers KV list requests from a script, records the index each
// request asked for, and holds requests past the script until they end.
type fakeConsul struct {
	mu     sync.Mutex
	script []step
	asked  []uint64
	done   chan struct{}
}

func (f *fakeConsul) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	idx, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
	f.mu.Lock()
	f.asked = append(f.asked, idx)
	n := len(f.asked)
	var s *step
	if n <= len(f.script) {
		s = &f.script[n-1]
	}
	if n == len(f.script)+1 {
		close(f.done)
	}
	f.mu.Unlock()
	if s == nil {
		<-r.Context().Done() // a blocking query that sees no change
		return
	}
	if s.status != 0 {
		http.Error(w, http.StatusText(s.status), s.status)
		return
	}
	w.Header().Set("X-Consul-Index", strconv.FormatUint(s.index, 10))
	w.Header().Set("X-Consul-LastContact", "12")
	w.Header().Set("X-Consul-KnownLeader", "true")
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`[{"Key":"inmesh/defaults","Value":"dGltZW91dDogMXM="}]`))
}

// TestLoopDiscipline runs a real api.Client against the script: indexes
// going backwards and zero, 429 and 500 answers, and counts the requests.
func TestLoopDiscipline(t *testing.T) {
	f := &fakeConsul{done: make(chan struct{}), script: []step{
		{index: 5}, {index: 7}, {index: 3}, {index: 0}, {status: 429}, {status: 500}, {index: 9},
	}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	cfg := api.DefaultConfig()
	cfg.Address = srv.Listener.Addr().String()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cfg.Transport = tr
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var contacts []time.Duration
	var errs int
	loop := &Loop{
		BaseBackoff: 20 * time.Millisecond,
		MaxBackoff:  40 * time.Millisecond,
		Query: func(ctx context.Context, index uint64) (Result, error) {
			_, meta, err := client.KV().List("inmesh/", (&api.QueryOptions{WaitIndex: index, AllowStale: true}).WithContext(ctx))
			if err != nil {
				return Result{}, err
			}
			contacts = append(contacts, meta.LastContact)
			return Result{Index: meta.LastIndex, LastContact: meta.LastContact}, nil
		},
		OnError: func(err error, failures int, wait time.Duration) {
			errs++
			if wait < 10*time.Millisecond {
				t.Errorf("failure %d: retry after %v, below the backoff floor", failures, wait)
			}
		},
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := loop.Run(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the script did not run through")
	}
	// The loop now waits in a blocking query: it must not ask again.
	f.mu.Lock()
	asked := append([]uint64(nil), f.asked...)
	f.mu.Unlock()
	cancel()
	wg.Wait()

	want := []uint64{0, 5, 7, 0, 1, 1, 1, 9}
	if len(asked) != len(want) {
		t.Fatalf("asked indexes %v, want %v", asked, want)
	}
	for i := range want {
		if asked[i] != want[i] {
			t.Fatalf("asked indexes %v, want %v", asked, want)
		}
	}
	if errs != 2 {
		t.Errorf("%d errors reported, want 2 (429 and 500)", errs)
	}
	if len(contacts) == 0 || contacts[0] != 12*time.Millisecond {
		t.Errorf("last contact %v", contacts)
	}
}

// TestLoopRateLimit checks that a query that answers at once every time
// (a churning key) is run at most once per MinInterval.
func TestLoopRateLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	n := 0
	var idx uint64
	loop := &Loop{MinInterval: 50 * time.Millisecond, Query: func(ctx context.Context, index uint64) (Result, error) {
		n++
		idx++
		return Result{Index: idx}, nil
	}}
	_ = loop.Run(ctx)
	// 300ms at one query per 50ms: about 6, never hundreds.
	if n > 8 {
		t.Fatalf("%d queries in 300ms with a 50ms rate limit", n)
	}
	t.Logf("%d queries in 300ms", n)
}

// TestLoopReadsInFullAfterAnOutage checks that after an error that is no
// answer (a refused connection), the next query reads in full (index 0),
// while an HTTP error answer keeps the index.
func TestLoopReadsInFullAfterAnOutage(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var asked []uint64
	script := []func() (Result, error){
		func() (Result, error) { return Result{Index: 40}, nil },
		func() (Result, error) { return Result{}, api.StatusError{Code: 500, Body: "boom"} },
		func() (Result, error) { return Result{}, errors.New("dial tcp 127.0.0.1:8500: connection refused") },
		func() (Result, error) { return Result{Index: 3}, nil }, // a restarted agent
	}
	loop := &Loop{BaseBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, Query: func(_ context.Context, index uint64) (Result, error) {
		asked = append(asked, index)
		if len(asked) > len(script) {
			cancel()
			return Result{Index: index}, nil
		}
		return script[len(asked)-1]()
	}}
	_ = loop.Run(ctx)
	want := []uint64{0, 40, 40, 0, 3}
	if fmt.Sprint(asked) != fmt.Sprint(want) {
		t.Fatalf("asked %v, want %v", asked, want)
	}
}
