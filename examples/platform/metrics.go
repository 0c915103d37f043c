package main

import (
	"context"
	"math"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// ---- metrics: what the mesh's instruments counted, read with the SDK's manual reader ----

// series is one data point of a collection: a histogram's count and
// buckets (bounds in seconds, whatever the instrument's unit), or a sum's
// value.
type series struct {
	name    string
	attrs   attribute.Set
	count   uint64
	bounds  []float64
	buckets []uint64
	value   float64
}

// snapshot is one collection, by instrument name and attribute set. The
// reader is cumulative, so what happened between two collections is
// later.sub(earlier).
type snapshot map[string]series

func collect(ctx context.Context, r *sdkmetric.ManualReader) (snapshot, error) {
	var rm metricdata.ResourceMetrics
	if err := r.Collect(ctx, &rm); err != nil {
		return nil, err
	}
	s := snapshot{}
	put := func(p series) { s[p.name+"|"+p.attrs.Encoded(attribute.DefaultEncoder())] = p }
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				scale := 1.0
				if m.Unit == "ms" {
					scale = 0.001
				}
				for _, dp := range d.DataPoints {
					bounds := make([]float64, len(dp.Bounds))
					for i, b := range dp.Bounds {
						bounds[i] = b * scale
					}
					put(series{name: m.Name, attrs: dp.Attributes, count: dp.Count, bounds: bounds, buckets: slices.Clone(dp.BucketCounts)})
				}
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					put(series{name: m.Name, attrs: dp.Attributes, value: float64(dp.Value)})
				}
			case metricdata.Sum[float64]:
				for _, dp := range d.DataPoints {
					put(series{name: m.Name, attrs: dp.Attributes, value: dp.Value})
				}
			}
		}
	}
	return s, nil
}

// sub returns what s counted since old.
func (s snapshot) sub(old snapshot) snapshot {
	d := make(snapshot, len(s))
	for k, p := range s {
		if o, ok := old[k]; ok {
			p.count -= o.count
			p.value -= o.value
			p.buckets = slices.Clone(p.buckets)
			for i := range p.buckets {
				if i < len(o.buckets) {
					p.buckets[i] -= o.buckets[i]
				}
			}
		}
		d[k] = p
	}
	return d
}

// match is a filter on attributes: every key has its value.
type match map[string]string

func (s snapshot) each(name string, m match, f func(series)) {
	for _, p := range s {
		if p.name != name || p.count == 0 && p.value == 0 {
			continue // another instrument, or nothing new
		}
		ok := true
		for k, v := range m {
			if got, has := p.attrs.Value(attribute.Key(k)); !has || got.Emit() != v {
				ok = false
				break
			}
		}
		if ok {
			f(p)
		}
	}
}

// count is the number of measurements of histogram name matching m.
func (s snapshot) count(name string, m match) uint64 {
	var n uint64
	s.each(name, m, func(p series) { n += p.count })
	return n
}

// value is the sum of counter name's values matching m.
func (s snapshot) value(name string, m match) float64 {
	var v float64
	s.each(name, m, func(p series) { v += p.value })
	return v
}

// by groups what matches m by the value of key: histogram counts, or
// counter values. Series without key are under "".
func (s snapshot) by(name, key string, m match) map[string]float64 {
	out := map[string]float64{}
	s.each(name, m, func(p series) {
		v, _ := p.attrs.Value(attribute.Key(key))
		out[v.Emit()] += float64(p.count) + p.value
	})
	return out
}

// quantile estimates the q-quantile, in seconds, of histogram name over the
// measurements matching m, interpolating within a bucket; false when there
// are none.
func (s snapshot) quantile(name string, q float64, m match) (float64, bool) {
	var bounds []float64
	var buckets []uint64
	var total uint64
	s.each(name, m, func(p series) {
		if bounds == nil {
			bounds, buckets = p.bounds, make([]uint64, len(p.buckets))
		}
		if len(p.buckets) != len(buckets) {
			return // other boundaries: not merged
		}
		for i, n := range p.buckets {
			buckets[i] += n
			total += n
		}
	})
	if total == 0 {
		return 0, false
	}
	rank := q * float64(total)
	var seen float64
	for i, n := range buckets {
		if n == 0 || seen+float64(n) < rank {
			seen += float64(n)
			continue
		}
		lo, hi := 0.0, math.Inf(1)
		if i > 0 {
			lo = bounds[i-1]
		}
		if i < len(bounds) {
			hi = bounds[i]
		}
		if math.IsInf(hi, 1) {
			return lo, true // beyond the last bound: at least that
		}
		return lo + (hi-lo)*(rank-seen)/float64(n), true
	}
	return bounds[len(bounds)-1], true
}

// rpcClientDuration is the name of the gRPC client duration histogram in
// s: the semantic conventions have named it rpc.client.duration and
// rpc.client.call.duration.
func (s snapshot) rpcClientDuration() string {
	for _, p := range s {
		if strings.HasPrefix(p.name, "rpc.client.") && strings.HasSuffix(p.name, "duration") {
			return p.name
		}
	}
	return "rpc.client.duration"
}
