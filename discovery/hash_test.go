package discovery_test

import (
	"fmt"
	"testing"

	"github.com/inmesh/inmesh/discovery"
)

var hashLBs = []string{discovery.RingHash, discovery.Maglev}

func hashPicker(t testing.TB, lb string, hosts []*discovery.Host) *discovery.HashPicker {
	t.Helper()
	p, ok := mustPicker(t, lb, hosts).(*discovery.HashPicker)
	if !ok {
		t.Fatalf("NewPicker(%q) is not a *HashPicker", lb)
	}
	return p
}

func userKey(i int) uint64 { return discovery.HashString(fmt.Sprintf("user-%d", i)) }

const keys = 10_000

// owners returns the host address of every user key.
func owners(p *discovery.HashPicker) []string {
	out := make([]string, keys)
	for i := range out {
		out[i] = p.PickHash(userKey(i), now, nil).Address
	}
	return out
}

func TestHashDistribution(t *testing.T) {
	for _, lb := range hashLBs {
		t.Run(lb, func(t *testing.T) {
			hosts, _ := newHosts(5)
			p := hashPicker(t, lb, hosts)
			counts := map[string]int{}
			for _, a := range owners(p) {
				counts[a]++
			}
			// 2,000 each when even; the ring of 1,024 points is within 25%.
			for _, h := range hosts {
				if c := counts[h.Address]; c < 1500 || c > 2500 {
					t.Errorf("%s got %d of %d keys, want 1500..2500 (%v)", h.Address, c, keys, counts)
				}
			}
		})
	}
}

func TestHashSameKeySameHost(t *testing.T) {
	for _, lb := range hashLBs {
		t.Run(lb, func(t *testing.T) {
			hosts, _ := newHosts(5)
			first := owners(hashPicker(t, lb, hosts))
			// Again, and over the same hosts in another order (a new
			// compilation of the same endpoints).
			again := owners(hashPicker(t, lb, hosts))
			rev := make([]*discovery.Host, len(hosts))
			for i, h := range hosts {
				rev[len(hosts)-1-i] = h
			}
			reordered := owners(hashPicker(t, lb, rev))
			for i := range first {
				if again[i] != first[i] || reordered[i] != first[i] {
					t.Fatalf("key %d: %s, then %s, reordered %s", i, first[i], again[i], reordered[i])
				}
			}
		})
	}
}

func TestHashRemoveHost(t *testing.T) {
	for _, lb := range hashLBs {
		t.Run(lb, func(t *testing.T) {
			for _, n := range []int{3, 5, 10} {
				hosts, _ := newHosts(n)
				before := owners(hashPicker(t, lb, hosts))
				removed := hosts[n-1].Address
				after := owners(hashPicker(t, lb, hosts[:n-1]))
				moved, stayedMoved := 0, 0
				for i := range before {
					if before[i] != after[i] {
						moved++
						if before[i] != removed {
							stayedMoved++
						}
					}
				}
				// About 1/n of the keys were on the removed host and must
				// move; the others stay (all of them on the ring, nearly all
				// in the maglev table).
				lo, hi := keys/n*6/10, keys/n*14/10
				if moved < lo || moved > hi {
					t.Errorf("%d hosts: %d of %d keys moved, want %d..%d", n, moved, keys, lo, hi)
				}
				limit := 0
				if lb == discovery.Maglev {
					limit = keys / 50
				}
				if stayedMoved > limit {
					t.Errorf("%d hosts: %d keys of the remaining hosts moved, want at most %d", n, stayedMoved, limit)
				}
			}
		})
	}
}

func TestHashSkipsEjected(t *testing.T) {
	for _, lb := range hashLBs {
		t.Run(lb, func(t *testing.T) {
			hosts, health := newHosts(5)
			p := hashPicker(t, lb, hosts)
			before := owners(p)
			health[2].down.Store(true)
			after := owners(p)
			spread := map[string]int{}
			for i := range before {
				switch {
				case after[i] == hosts[2].Address:
					t.Fatalf("key %d went to the ejected host", i)
				case before[i] == hosts[2].Address:
					spread[after[i]]++
				case after[i] != before[i]:
					t.Fatalf("key %d moved from %s to %s though its host is available", i, before[i], after[i])
				}
			}
			// The ejected host's keys spread over the others.
			if len(spread) < 3 {
				t.Errorf("the ejected host's keys went to %v, want them spread", spread)
			}
			// Back: every key goes home.
			health[2].down.Store(false)
			back := owners(p)
			for i := range before {
				if back[i] != before[i] {
					t.Fatalf("key %d: %s after the host came back, want %s", i, back[i], before[i])
				}
			}
			// Every host ejected: panic mode, the key's own host.
			for _, h := range health {
				h.down.Store(true)
			}
			for i, a := range owners(p) {
				if a != before[i] {
					t.Fatalf("every host ejected: key %d went to %s, want its own %s", i, a, before[i])
				}
			}
		})
	}
}

func TestHashAvoid(t *testing.T) {
	for _, lb := range hashLBs {
		t.Run(lb, func(t *testing.T) {
			hosts, health := newHosts(4)
			p := hashPicker(t, lb, hosts)
			for i := range 200 {
				k := userKey(i)
				own := p.PickHash(k, now, nil)
				next := p.PickHash(k, now, []*discovery.Host{own})
				if next == own || next == nil {
					t.Fatalf("key %d: avoiding %s picked %v", i, own.Address, next)
				}
				if again := p.PickHash(k, now, []*discovery.Host{own}); again != next {
					t.Fatalf("key %d: the next host is %s, then %s", i, next.Address, again.Address)
				}
				third := p.PickHash(k, now, []*discovery.Host{own, next})
				if third == own || third == next {
					t.Fatalf("key %d: avoiding %s and %s picked %s", i, own.Address, next.Address, third.Address)
				}
				if all := p.PickHash(k, now, hosts); all != own {
					t.Fatalf("key %d: avoiding every host picked %s, want its own %s", i, all.Address, own.Address)
				}
			}
			// Avoiding the only available host still picks it rather than
			// an ejected one; with every host ejected, one not avoided.
			for _, h := range health[1:] {
				h.down.Store(true)
			}
			if h := p.PickHash(userKey(1), now, hosts[:1]); h != hosts[0] {
				t.Errorf("avoiding the only available host picked %v, want it", h)
			}
			health[0].down.Store(true)
			if h := p.PickHash(userKey(1), now, hosts[:1]); h == nil || h == hosts[0] {
				t.Errorf("every host ejected: avoiding %s picked %v", hosts[0].Address, h)
			}
		})
	}
}

func TestHashNoKeyIsRandom(t *testing.T) {
	for _, lb := range hashLBs {
		t.Run(lb, func(t *testing.T) {
			hosts, health := newHosts(4)
			p := hashPicker(t, lb, hosts)
			health[0].down.Store(true)
			counts := countPicks(p, 8000, now)
			if counts[hosts[0].Address] != 0 {
				t.Errorf("the ejected host got %d picks", counts[hosts[0].Address])
			}
			for _, h := range hosts[1:] {
				if c := counts[h.Address]; c < 1800 {
					t.Errorf("%s got %d of 8000 picks without a key, want about a third", h.Address, c)
				}
			}
		})
	}
}

func TestHashNoHosts(t *testing.T) {
	for _, lb := range hashLBs {
		p := hashPicker(t, lb, nil)
		if h := p.PickHash(1, now, nil); h != nil {
			t.Errorf("%s: PickHash over no hosts = %v", lb, h)
		}
		if h := p.Pick(now); h != nil {
			t.Errorf("%s: Pick over no hosts = %v", lb, h)
		}
	}
}

func TestHashSizes(t *testing.T) {
	hosts, _ := newHosts(3)
	for _, tc := range []struct {
		o    discovery.HashOptions
		want int
	}{
		{discovery.HashOptions{}, 1536},                                 // 342 points a host, rounded up to 512
		{discovery.HashOptions{MinRingSize: 10, MaxRingSize: 12}, 12},   // 4 each
		{discovery.HashOptions{MinRingSize: 100, MaxRingSize: 100}, 99}, // at most the max
		{discovery.HashOptions{MinRingSize: 1, MaxRingSize: 1}, 3},      // at least a point a host
	} {
		p, err := discovery.NewPickerOptions(discovery.RingHash, hosts, tc.o)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.(*discovery.HashPicker).Size(); got != tc.want {
			t.Errorf("%+v: %d points, want %d", tc.o, got, tc.want)
		}
	}
	if got := hashPicker(t, discovery.Maglev, hosts).Size(); got != discovery.MaglevTableSize {
		t.Errorf("maglev table of %d entries, want %d", got, discovery.MaglevTableSize)
	}
}

func TestHashPickAllocs(t *testing.T) {
	for _, lb := range hashLBs {
		hosts, health := newHosts(5)
		health[1].down.Store(true)
		p := hashPicker(t, lb, hosts)
		avoid := []*discovery.Host{hosts[0]}
		k := uint64(0)
		if n := testing.AllocsPerRun(1000, func() {
			k++
			p.PickHash(discovery.HashString("user"), now, avoid)
			p.PickHash(k*0x9e3779b97f4a7c15, now, nil)
			p.Pick(now)
		}); n != 0 {
			t.Errorf("%s: %v allocations a pick", lb, n)
		}
	}
}

func BenchmarkPickHash(b *testing.B) {
	for _, lb := range hashLBs {
		b.Run(lb, func(b *testing.B) {
			hosts, _ := newHosts(10)
			p := hashPicker(b, lb, hosts)
			b.ReportAllocs()
			var k uint64
			for b.Loop() {
				k += 0x9e3779b97f4a7c15
				p.PickHash(k, now, nil)
			}
		})
	}
}

func BenchmarkNewHashPicker(b *testing.B) {
	for _, lb := range hashLBs {
		for _, n := range []int{10, 100} {
			b.Run(fmt.Sprintf("%s/%d", lb, n), func(b *testing.B) {
				hosts, _ := newHosts(n)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := discovery.NewPicker(lb, hosts); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
