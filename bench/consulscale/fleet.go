package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/mesh"
)

// counter counts what a fleet's Consul clients do: requests made, and
// connections open.
type counter struct {
	requests atomic.Int64
	open     atomic.Int64
}

type countingTransport struct {
	base *http.Transport
	c    *counter
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.c.requests.Add(1)
	return t.base.RoundTrip(r)
}

type countedConn struct {
	net.Conn
	c    *counter
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.c.open.Add(-1) })
	return c.Conn.Close()
}

// newClient is a Consul client of its own, as a process of its own has
// one; c (nil: none) counts its requests and connections.
func newClient(addr string, c *counter) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}
	if agentTLS != nil {
		cfg.Scheme = "https"
		tr.TLSClientConfig = agentTLS.Clone()
		tr.ForceAttemptHTTP2 = true // the agent's HTTPS API speaks HTTP/2
	}
	cfg.HttpClient = &http.Client{Transport: tr}
	if c != nil {
		tr.DialContext = func(ctx context.Context, network, address string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, network, address)
			if err != nil {
				return nil, err
			}
			c.open.Add(1)
			return &countedConn{Conn: conn, c: c}, nil
		}
		cfg.HttpClient = &http.Client{Transport: countingTransport{base: tr, c: c}}
	}
	return api.NewClient(cfg)
}

// result is one row of the table.
type result struct {
	meshes                  int
	p50, p99                time.Duration
	agentCPU                float64 // of one core, during the writes; <0: unknown
	unrelatedCPU            time.Duration
	idleRPS                 float64
	conns, goroutines, heap float64 // per mesh
	loops                   float64 // per mesh: the goroutines net/http runs for connections
}

func (r result) row() string {
	cpu := "n/a (not our process)"
	if r.agentCPU >= 0 {
		cpu = fmt.Sprintf("%.0f%%", 100*r.agentCPU)
	}
	return fmt.Sprintf("| %d | %s / %s | %s | %.3f ms | %.1f | %.1f connections, %.1f goroutines (%.1f of them net/http's connection loops), %.0f KiB |",
		r.meshes, ms(r.p50), ms(r.p99), cpu, float64(r.unrelatedCPU)/1e6, r.idleRPS, r.conns, r.goroutines, r.loops, r.heap/1024)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/1e6) }

// measure starts n caller meshes and one destination on the agent, each
// caller having called the destination once, and measures the row.
func measure(ag *agent, n, writes int, idle time.Duration) (result, error) {
	ctx := context.Background()
	prefix := fmt.Sprintf("consulscale-%d-%d", n, time.Now().UnixNano())
	kv := ag.client.KV()
	put := func(key, value string) error {
		_, err := kv.Put(&api.KVPair{Key: prefix + "/" + key, Value: []byte(value)}, nil)
		return err
	}
	defer func() { _, _ = kv.DeleteTree(prefix+"/", nil) }()
	if err := put("services/dest", "timeout: 1s\n"); err != nil {
		return result{}, err
	}
	// The blocks of the fleet's other services, which every mesh reads
	// with each KV answer.
	for i := range otherKeys {
		block := fmt.Sprintf("timeout: %dms\nretry: {attempts: 3, backoff: {initial: 25ms, max: 250ms}}\n", 100+i)
		if err := put(fmt.Sprintf("services/other-%d", i), block); err != nil {
			return result{}, err
		}
	}
	callers := make([]string, n)
	var entries []string
	defer func() {
		for _, name := range entries {
			_, _ = ag.client.ConfigEntries().Delete(api.ServiceIntentions, name, nil)
		}
	}()
	for i := range callers {
		callers[i] = fmt.Sprintf("%s-caller-%d", prefix, i)
	}
	// A service-intentions entry for every caller and the destination, so
	// that each mesh's intentions watch finds one.
	for _, name := range append([]string{prefix + "-dest"}, callers...) {
		e := &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: name,
			Sources: []*api.SourceIntention{{Name: "*", Action: api.IntentionActionAllow}}}
		if _, _, err := ag.client.ConfigEntries().Set(e, nil); err != nil {
			return result{}, err
		}
		entries = append(entries, name)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))

	// The destination, registered, serving over mTLS, in a process of its
	// own.
	destName := prefix + "-dest"
	if err := put("services/"+destName, "timeout: 1s\n"); err != nil {
		return result{}, err
	}
	stopDest, err := startDestination(ag, destName, prefix)
	if err != nil {
		return result{}, err
	}
	defer stopDest()

	// The callers.
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutines, loops := runtime.NumGoroutine(), connectionLoops()
	c := &counter{}
	var checked string // the address the callers register, with -register
	if register {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return result{}, err
		}
		defer ln.Close()
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				_ = conn.Close()
			}
		}()
		checked = ln.Addr().String()
	}
	ms := make([]*mesh.Mesh, n)
	defer func() {
		for _, m := range ms {
			if m != nil {
				_ = m.Close()
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := range ms {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			client, err := newClient(ag.addr, c)
			if err != nil {
				errs <- err
				return
			}
			m, err := mesh.New(ctx, mesh.WithService(callers[i]), mesh.WithLogger(logger),
				mesh.WithControlPlane(consul.New(consul.Config{Client: client, Prefix: prefix})))
			if err != nil {
				errs <- fmt.Errorf("mesh %d: %w", i, err)
				return
			}
			ms[i] = m
			if register {
				// As a production workload does: the agent checks its
				// address, and the mesh reports its policy status.
				if err := m.Register(ctx, mesh.Instance{Address: checked}); err != nil {
					errs <- fmt.Errorf("mesh %d: %w", i, err)
					return
				}
			}
			resp, err := m.HTTPClient().Get("http://" + destName + "/")
			if err != nil {
				errs <- fmt.Errorf("mesh %d calling the destination: %w", i, err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return result{}, err
	}
	time.Sleep(time.Second) // the watches settle
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if heapProfile != "" {
		if err := writeHeapProfile(heapProfile); err != nil {
			return result{}, err
		}
	}
	if goroutineProfile != "" {
		if err := writeGoroutines(goroutineProfile); err != nil {
			return result{}, err
		}
	}
	r := result{meshes: n, agentCPU: -1}
	r.heap = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
	r.goroutines = float64(runtime.NumGoroutine()-goroutines) / float64(n)
	r.loops = float64(connectionLoops()-loops) / float64(n)
	r.conns = float64(c.open.Load()) / float64(n)

	// Idle load.
	req0 := c.requests.Load()
	time.Sleep(idle)
	r.idleRPS = float64(c.requests.Load()-req0) / idle.Seconds()

	// Propagation of a write the meshes care about.
	versions := func() []string {
		v := make([]string, n)
		for i, m := range ms {
			v[i] = m.PolicyVersion()
		}
		return v
	}
	waitAll := func(old []string, limit time.Duration, poll time.Duration) (time.Duration, bool) {
		start := time.Now()
		for i := 0; i < n; {
			if ms[i].PolicyVersion() != old[i] {
				i++
				continue
			}
			if time.Since(start) > limit {
				return 0, false
			}
			time.Sleep(poll)
		}
		return time.Since(start), true
	}
	var lat []time.Duration
	cpu0, cpuOK := ag.cpu()
	wall0 := time.Now()
	for w := range writes {
		old := versions()
		if err := put("services/dest", fmt.Sprintf("timeout: %dms\n", 1000+w+1)); err != nil {
			return result{}, err
		}
		d, ok := waitAll(old, 30*time.Second, 200*time.Microsecond)
		if !ok {
			return result{}, fmt.Errorf("write %d: not every mesh applied it within 30s", w)
		}
		lat = append(lat, d)
	}
	if cpu1, ok := ag.cpu(); ok && cpuOK {
		r.agentCPU = float64(cpu1-cpu0) / float64(time.Since(wall0))
	}
	slices.Sort(lat)
	r.p50, r.p99 = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]

	// Writes of a key no caller reads, and what they cost this process.
	idleCPU0, idleWall0 := selfCPU(), time.Now()
	time.Sleep(time.Second)
	idleRate := float64(selfCPU()-idleCPU0) / float64(time.Since(idleWall0))
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return result{}, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return result{}, err
		}
		defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
	}
	cpuStart, wallStart := selfCPU(), time.Now()
	for w := range writes {
		if err := put(fmt.Sprintf("services/unrelated-%d", w), "timeout: 1s\n"); err != nil {
			return result{}, err
		}
		time.Sleep(100 * time.Millisecond) // every mesh has woken and settled
	}
	spent := float64(selfCPU()-cpuStart) - idleRate*float64(time.Since(wallStart))
	r.unrelatedCPU = time.Duration(max(0, spent) / float64(n*writes))
	return r, nil
}

// connectionLoops counts the goroutines net/http runs for client
// connections: two per HTTP/1.1 connection (its read and write loops), one
// per HTTP/2 connection (its read loop). The others a mesh holds are its
// own (one per long poll in flight, and its followers).
func connectionLoops() int {
	var b strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
		return 0
	}
	n := 0
	for _, group := range strings.Split(b.String(), "\n\n") {
		count, _, ok := strings.Cut(group, " @")
		if !ok {
			continue
		}
		if strings.Contains(group, "net/http.(*persistConn).readLoop") || strings.Contains(group, "net/http.(*persistConn).writeLoop") ||
			strings.Contains(group, "net/http.(*http2ClientConn).readLoop") {
			if i := strings.LastIndexByte(count, '\n'); i >= 0 {
				count = count[i+1:] // the first group follows the profile's header line
			}
			c, _ := strconv.Atoi(strings.TrimSpace(count))
			n += c
		}
	}
	return n
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// writeGoroutines writes the stacks of every goroutine, grouped, to path.
func writeGoroutines(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("goroutine").WriteTo(f, 1); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
