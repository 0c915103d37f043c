//go:build race

package mesh

// raceEnabled is set under the race detector, whose sync.Pool drops items
// at random: allocation counts that go through a pool are not exact.
const raceEnabled = true
