// Package jobs holds Mail Queue's River jobs: their arguments, their
// workers, and the fast lanes that queue priorities map onto.
//
// One file per job. Kind() strings are stable: they are stored in river_job
// and must never change once released.
package jobs

import (
	"slices"

	"github.com/riverqueue/river"

	"github.com/mailqueue/mailqueue/store"
)

// The River queues ("lanes") that queue priorities 1–10 map onto. Each lane
// has its own worker budget, so a flood of bulk mail never holds up a
// password reset (DESIGN.md, decision 5).
const (
	LaneCritical = "critical" // priority 9–10
	LaneHigh     = "high"     // priority 7–8
	LaneNormal   = "normal"   // priority 4–6
	LaneBulk     = "bulk"     // priority 1–3

	// QueueMaintenance runs housekeeping (partitions, cleanup).
	QueueMaintenance = "maintenance"
)

// Lane returns the River queue and the River job priority (1 = first, 4 =
// last) for a Mail Queue priority from 1 (lowest) to 10 (highest).
// Out-of-range priorities are clamped.
func Lane(priority int) (queue string, riverPriority int) {
	switch {
	case priority >= 10:
		return LaneCritical, 1
	case priority == 9:
		return LaneCritical, 2
	case priority == 8:
		return LaneHigh, 1
	case priority == 7:
		return LaneHigh, 2
	case priority == 6:
		return LaneNormal, 1
	case priority == 5:
		return LaneNormal, 2
	case priority == 4:
		return LaneNormal, 3
	case priority == 3:
		return LaneBulk, 1
	case priority == 2:
		return LaneBulk, 2
	default:
		return LaneBulk, 3
	}
}

// QueueConfig shares workers total workers between the lanes and adds the
// maintenance queue. Urgent lanes get a budget far above their usual load so
// they never wait behind a bulk backlog.
func QueueConfig(workers int) map[string]river.QueueConfig {
	share := func(pct int) int { return max(1, workers*pct/100) }
	return map[string]river.QueueConfig{
		LaneCritical:     {MaxWorkers: share(20)},
		LaneHigh:         {MaxWorkers: share(20)},
		LaneNormal:       {MaxWorkers: share(35)},
		LaneBulk:         {MaxWorkers: share(25)},
		QueueMaintenance: {MaxWorkers: 2},
	}
}

// ReindexerIndexNames are the indexes River's reindexer rebuilds: its
// defaults but those store.Migrate drops.
func ReindexerIndexNames() []string {
	return slices.DeleteFunc(river.ReindexerIndexNamesDefault(), func(n string) bool {
		return slices.Contains(store.RiverDroppedIndexes, n)
	})
}
