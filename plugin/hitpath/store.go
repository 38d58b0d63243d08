package hitpath

import "sync"

// store holds the entries of one listen address, by query key.
type store struct {
	mu  sync.RWMutex
	m   map[string]*entry
	max int
}

func newStore(max int) *store { return &store{m: map[string]*entry{}, max: max} }

// get returns the entry for key, or nil.
func (s *store) get(key []byte) *entry {
	s.mu.RLock()
	e := s.m[string(key)]
	s.mu.RUnlock()
	return e
}

// put stores e under key. When the store is full it first drops expired
// entries among a few it looks at, then any one: the cache plugin evicts at
// random too, and the chain answers whatever the store lacks.
func (s *store) put(key string, e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; !ok && len(s.m) >= s.max {
		seen, dropped := 0, false
		for k, old := range s.m {
			if old.expiresAt <= e.seen {
				delete(s.m, k)
				dropped = true
			}
			if seen++; seen >= 8 {
				break
			}
		}
		if !dropped {
			for k := range s.m {
				delete(s.m, k)
				break
			}
		}
	}
	s.m[key] = e
}
