package consultest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Cluster is a Consul datacenter on loopback: servers (bootstrap_expect
// = the number of servers) and client agents, each its own process with
// its own free ports and a data dir under the test's temporary directory,
// joined with retry_join, Connect enabled. Members are numbered servers
// first: 0..servers-1 are the servers, then the client agents.
type Cluster struct {
	t       testing.TB
	bin     string
	members []*Member
	servers int
}

// Member is one agent of a Cluster.
type Member struct {
	// Name is the node name (s0, s1, ..., c0, c1, ...).
	Name string
	// Server reports whether the member is a server.
	Server bool
	// HTTPAddr is the member's HTTP API, host:port on 127.0.0.1.
	HTTPAddr string
	// Client talks to the member.
	Client *api.Client

	bin     string
	dir     string // data dir, kept across Kill and Start
	cfgFile string
	ports   [4]int // http, serf lan, serf wan, server rpc

	mu      sync.Mutex
	log     *logBuffer
	cmd     *exec.Cmd
	waitErr chan error
	paused  bool
}

// StartCluster starts servers Consul servers and clients client agents
// for t, stopped when t ends, and returns once the cluster has a leader,
// every member is alive in the LAN gossip pool, and the Connect CA issues
// leaf certificates through a client agent (through a server when there is
// no client). Like Start, it skips t without a binary, or fails it under CI.
//
// The agents run with raft_multiplier 1, so a killed leader is replaced
// within seconds.
func StartCluster(t testing.TB, servers, clients int) *Cluster {
	t.Helper()
	if servers < 1 {
		t.Fatalf("consultest: a cluster needs a server")
	}
	bin := binaryOrSkip(t)
	var last error
	for range 3 { // a free port can be taken between choosing and binding
		c := &Cluster{t: t, bin: bin, servers: servers}
		if last = c.boot(t.TempDir(), clients); last == nil {
			t.Cleanup(c.Stop)
			return c
		}
		c.Stop()
	}
	t.Fatalf("consultest: starting a cluster: %v", last)
	return nil
}

// boot makes the members under root, starts them and waits for them.
func (c *Cluster) boot(root string, clients int) error {
	servers, bin := c.servers, c.bin
	for i := range servers + clients {
		m := &Member{Server: i < servers, bin: bin}
		if m.Server {
			m.Name = "s" + strconv.Itoa(i)
		} else {
			m.Name = "c" + strconv.Itoa(i-servers)
		}
		m.dir = filepath.Join(root, m.Name)
		if err := os.MkdirAll(m.dir, 0o700); err != nil {
			return err
		}
		ports, err := freePorts(4)
		if err != nil {
			return err
		}
		copy(m.ports[:], ports)
		m.HTTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(m.ports[0]))
		cfg := api.DefaultConfig()
		cfg.Address = m.HTTPAddr
		if m.Client, err = api.NewClient(cfg); err != nil {
			return err
		}
		c.members = append(c.members, m)
	}
	var join []string
	for _, m := range c.members[:servers] {
		join = append(join, net.JoinHostPort("127.0.0.1", strconv.Itoa(m.ports[1])))
	}
	for _, m := range c.members {
		if err := m.writeConfig(servers, join); err != nil {
			return err
		}
	}
	for _, m := range c.members {
		if err := m.run(); err != nil {
			return fmt.Errorf("starting %s: %w", m.Name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.WaitHealthy(ctx); err != nil {
		return fmt.Errorf("%w\n%s", err, c.Logs())
	}
	return nil
}

// binaryOrSkip returns the consul binary, or skips t (fails it under CI).
func binaryOrSkip(t testing.TB) string {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v (CI is set: a missing Consul agent is a failure)", err)
		}
		t.Skip(err)
	}
	return bin
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. The serf ports
// take UDP too; a port free for TCP is almost always free for UDP on
// loopback, and StartCluster fails clearly when it is not.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	var out []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// writeConfig writes the member's agent configuration as JSON into its
// data dir.
func (m *Member) writeConfig(servers int, join []string) error {
	cfg := map[string]any{
		"node_name":            m.Name,
		"datacenter":           "dc1",
		"data_dir":             m.dir,
		"server":               m.Server,
		"bind_addr":            "127.0.0.1",
		"advertise_addr":       "127.0.0.1",
		"client_addr":          "127.0.0.1",
		"retry_join":           join,
		"retry_interval":       "200ms",
		"log_level":            "warn",
		"disable_update_check": true,
		"leave_on_terminate":   false,
		"ports": map[string]int{
			"http": m.ports[0], "serf_lan": m.ports[1], "serf_wan": m.ports[2], "server": m.ports[3],
			"dns": -1, "grpc": -1, "grpc_tls": -1, "https": -1,
		},
		"connect": map[string]any{"enabled": true},
		// raft_multiplier 1: a dead leader is replaced in 1 to 3 s. The
		// LAN gossip keeps Consul's timings: shorter probes made members
		// flap between failed and alive on a loaded machine, and a
		// leader election does not wait for gossip anyway.
		"performance": map[string]any{"raft_multiplier": 1},
	}
	if m.Server {
		cfg["bootstrap_expect"] = servers
		// A killed server comes back with its data dir and its node ID:
		// autopilot must not remove it meanwhile.
		cfg["autopilot"] = map[string]any{"cleanup_dead_servers": false}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	m.cfgFile = filepath.Join(m.dir, "agent.json")
	return os.WriteFile(m.cfgFile, b, 0o600)
}

// run starts the member's process and returns once it is started (not
// ready: see Cluster.WaitHealthy).
func (m *Member) run() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return nil
	}
	m.log = &logBuffer{}
	cmd := exec.Command(m.bin, "agent", "-config-file="+m.cfgFile)
	cmd.Stdout = m.log
	cmd.Stderr = m.log
	if err := cmd.Start(); err != nil {
		return err
	}
	m.cmd = cmd
	m.paused = false
	m.waitErr = make(chan error, 1)
	go func() { m.waitErr <- cmd.Wait() }()
	return nil
}

// kill sends SIGKILL (after SIGCONT, so a paused process dies) and waits.
func (m *Member) kill() {
	m.mu.Lock()
	cmd, waitErr := m.cmd, m.waitErr
	m.cmd = nil
	m.mu.Unlock()
	stopProcess(cmd, waitErr, syscall.SIGKILL)
}

// Log returns what the member printed since it last started.
func (m *Member) Log() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.log == nil {
		return ""
	}
	return m.log.String()
}

// Members returns the members, servers first.
func (c *Cluster) Members() []*Member { return c.members }

// Member returns member i (servers first).
func (c *Cluster) Member(i int) *Member { return c.members[i] }

// Servers returns the servers.
func (c *Cluster) Servers() []*Member { return c.members[:c.servers] }

// Clients returns the client agents.
func (c *Cluster) Clients() []*Member { return c.members[c.servers:] }

// Leader returns the index of the server that leads, as the first running
// server that answers says; -1 when none knows a leader.
func (c *Cluster) Leader() int {
	for _, m := range c.Servers() {
		if !m.running() {
			continue
		}
		addr, err := m.Client.Status().Leader()
		if err != nil || addr == "" {
			continue
		}
		for i, s := range c.Servers() {
			if addr == net.JoinHostPort("127.0.0.1", strconv.Itoa(s.ports[3])) {
				return i
			}
		}
	}
	return -1
}

// Index returns the index of m in c (servers first), -1 when m is not c's.
func (c *Cluster) Index(m *Member) int {
	for i, x := range c.members {
		if x == m {
			return i
		}
	}
	return -1
}

// Running reports whether the member runs and is not paused.
func (m *Member) Running() bool { return m.running() }

// running reports whether the member runs and is not paused.
func (m *Member) running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd != nil && !m.paused
}

// Kill kills member i with SIGKILL, as a crash: it does not leave the
// cluster, which sees it fail. Its data dir stays for Start.
func (c *Cluster) Kill(i int) { c.members[i].kill() }

// Start starts member i again after Kill, with the same data dir, node ID
// and ports, and returns once it answers on its HTTP API. It does not wait
// for the cluster to see it alive: WaitHealthy does.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	m := c.members[i]
	if err := m.run(); err != nil {
		c.t.Fatalf("consultest: starting %s: %v", m.Name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if _, err := m.Client.Agent().Self(); err == nil {
			return
		}
		select {
		case err := <-m.waitErr:
			m.waitErr <- err
			c.t.Fatalf("consultest: %s exited: %v\n%s", m.Name, err, m.Log())
		case <-ctx.Done():
			c.t.Fatalf("consultest: %s does not answer: %v\n%s", m.Name, ctx.Err(), m.Log())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Restart kills member i and starts it again (Kill, then Start).
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Kill(i)
	c.Start(i)
}

// Partition cuts member i off from the others. Without root (no
// iptables, no network namespaces) the practical way on loopback is to
// freeze the process with SIGSTOP: its sockets stay open but nothing
// answers, so to the others it looks partitioned: a paused leader loses
// its leadership once the followers' heartbeats time out, and a paused
// follower drops out of the quorum. It differs from a real partition in
// one way: the paused member does not run either, so it cannot act on
// its own side (a real partitioned leader would step down by itself).
// It returns once the kernel reports the process stopped.
func (c *Cluster) Partition(i int) {
	m := c.members[i]
	m.mu.Lock()
	cmd := m.cmd
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	m.mu.Lock()
	m.paused = true
	_ = cmd.Process.Signal(syscall.SIGSTOP)
	m.mu.Unlock()
	stat := fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if stopped(stat) {
			return
		}
	}
}

// Resume ends Partition(i): the process runs again.
func (c *Cluster) Resume(i int) {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		_ = m.cmd.Process.Signal(syscall.SIGCONT)
	}
	m.paused = false
}

// WaitHealthy waits until there is a leader, every member is alive in the
// LAN pool as every running member's first server sees it, and a Connect
// leaf can be issued through the first client agent (the first server when
// there is none).
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	var last error
	for {
		if last = c.healthy(); last == nil {
			return nil
		}
		for _, m := range c.members {
			select {
			case err := <-m.waitErr:
				m.waitErr <- err
				return fmt.Errorf("consultest: %s exited: %v", m.Name, err)
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("consultest: cluster not healthy: %w (last: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) healthy() error {
	if c.Leader() < 0 {
		return errors.New("no leader")
	}
	for _, m := range c.members {
		if !m.running() {
			return fmt.Errorf("%s is not running", m.Name)
		}
		if _, err := m.Client.Status().Leader(); err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
	}
	members, err := c.members[0].Client.Agent().Members(false)
	if err != nil {
		return err
	}
	alive := 0
	var others []string
	for _, mm := range members {
		if mm.Status == 1 { // serf.StatusAlive
			alive++
		} else {
			others = append(others, fmt.Sprintf("%s status %d", mm.Name, mm.Status))
		}
	}
	if alive != len(c.members) {
		return fmt.Errorf("%d of %d members alive as %s sees them (%v)", alive, len(c.members), c.members[0].Name, others)
	}
	probe := c.members[0]
	if cl := c.Clients(); len(cl) > 0 {
		probe = cl[0]
	}
	if _, _, err := probe.Client.Agent().ConnectCALeaf("consultest-probe", nil); err != nil {
		return fmt.Errorf("connect leaf through %s: %w", probe.Name, err)
	}
	return nil
}

// Stop kills every member and waits for them. It is safe to call twice.
func (c *Cluster) Stop() {
	for _, m := range c.members {
		m.kill()
	}
}

// Logs returns what every member printed, for a failure message.
func (c *Cluster) Logs() string {
	var b bytes.Buffer
	for _, m := range c.members {
		fmt.Fprintf(&b, "--- %s ---\n%s\n", m.Name, m.Log())
	}
	return b.String()
}
