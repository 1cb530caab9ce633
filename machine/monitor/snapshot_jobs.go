package monitor

import (
	"encoding/json"
	"sync"
)

// QMP's snapshot-save, snapshot-load and snapshot-delete are jobs (QEMU 7.2): the
// command creates the job and replies; JOB_STATUS_CHANGE reports created → running →
// waiting → pending → concluded when it succeeds, or running → aborting → concluded
// with the error in query-jobs when it fails. A concluded job stays listed until
// job-dismiss (status "null").

// job is one snapshot job.
type job struct {
	id, typ string
	status  string
	err     string
	done    bool
}

// jobTable holds the session-independent job list, newest first as query-jobs lists it.
type jobTable struct {
	s    *Server
	mu   sync.Mutex
	jobs []*job
}

func (t *jobTable) set(j *job, status string) {
	t.mu.Lock()
	j.status = status
	t.mu.Unlock()
	t.s.Emit("JOB_STATUS_CHANGE", map[string]string{"status": status, "id": j.id})
}

// registerSnapshot adds the snapshot jobs, query-jobs and job-dismiss.
func (s *Server) registerSnapshot() {
	t := &jobTable{s: s}
	jobArgs := []arg{{"job-id", "string", false}, {"tag", "string", false}, {"vmstate", "string", false}, {"devices", "array", false}}
	start := func(typ string, run func(Snapshotter, SnapshotRequest) error) func(c *call) (any, error) {
		return func(c *call) (any, error) {
			id, _ := c.str("job-id")
			tag, _ := c.str("tag")
			vm, _ := c.str("vmstate")
			var devs []string
			if err := json.Unmarshal(c.args["devices"], &devs); err != nil {
				return nil, errorf(GenericError, "Invalid parameter type for 'devices[0]', expected: string")
			}
			if devs == nil {
				devs = []string{}
			}
			t.mu.Lock()
			for _, j := range t.jobs {
				if j.id == id {
					t.mu.Unlock()
					return nil, errorf(GenericError, "Job ID '%s' already in use", id)
				}
			}
			j := &job{id: id, typ: typ}
			t.jobs = append([]*job{j}, t.jobs...)
			t.mu.Unlock()
			t.set(j, "created")
			t.set(j, "running")
			c.then(func() {
				go func() {
					err := error(errorf(GenericError, "no block device can store vmstate for snapshot"))
					if len(devs) == 0 {
						err = errorf(GenericError, "At least one device is required for snapshot")
					} else if sn, ok := s.m.(Snapshotter); ok {
						err = run(sn, SnapshotRequest{Tag: tag, VMState: vm, Devices: devs})
					}
					if err != nil {
						t.mu.Lock()
						j.err = errText(err)
						t.mu.Unlock()
						t.set(j, "aborting")
					} else {
						t.set(j, "waiting")
						t.set(j, "pending")
					}
					t.mu.Lock()
					j.done = true
					t.mu.Unlock()
					t.set(j, "concluded")
				}()
			})
			return struct{}{}, nil
		}
	}
	s.add(&command{name: "snapshot-save", args: jobArgs, ret: "empty", run: start("snapshot-save", Snapshotter.SaveSnapshot)})
	s.add(&command{name: "snapshot-load", args: jobArgs, ret: "empty", run: start("snapshot-load", Snapshotter.LoadSnapshot)})
	s.add(&command{name: "snapshot-delete", args: []arg{jobArgs[0], jobArgs[1], jobArgs[3]}, ret: "empty",
		run: start("snapshot-delete", Snapshotter.DeleteSnapshot)})
	s.add(&command{name: "query-jobs", ret: "any", run: func(*call) (any, error) {
		type info struct {
			CurrentProgress int    `json:"current-progress"`
			Status          string `json:"status"`
			TotalProgress   int    `json:"total-progress"`
			Type            string `json:"type"`
			ID              string `json:"id"`
			Error           string `json:"error,omitempty"`
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		out := []info{}
		for _, j := range t.jobs {
			cur := 0
			if j.done {
				cur = 1
			}
			out = append(out, info{cur, j.status, 1, j.typ, j.id, j.err})
		}
		return out, nil
	}})
	s.add(&command{name: "job-dismiss", args: []arg{{"id", "string", false}}, ret: "empty", run: func(c *call) (any, error) {
		id, _ := c.str("id")
		t.mu.Lock()
		for i, j := range t.jobs {
			if j.id != id {
				continue
			}
			if j.status != "concluded" {
				t.mu.Unlock()
				return nil, errorf(GenericError, "Job '%s' in state '%s' cannot accept command verb 'dismiss'", id, j.status)
			}
			t.jobs = append(t.jobs[:i:i], t.jobs[i+1:]...)
			t.mu.Unlock()
			t.s.Emit("JOB_STATUS_CHANGE", map[string]string{"status": "null", "id": id}) // before the reply, as QEMU
			return struct{}{}, nil
		}
		t.mu.Unlock()
		return nil, errorf(GenericError, "Job not found")
	}})
}
