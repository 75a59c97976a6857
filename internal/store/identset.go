package store

import "iter"

// identSet maps the ids of the variables a watch names to the identifier
// the caller passed for each (the first, when two name one variable). Most
// watches name a few variables, and a server may hold a hundred thousand
// idle ones: up to identSetFew entries live in a slice searched in order
// (about 32 bytes an entry, where a map costs some 300 bytes even for one,
// and a lookup among a few is as quick), more in a map.
type identSet struct {
	few  []identPair
	many map[string]string
}

type identPair struct{ id, ident string }

const identSetFew = 8

func newIdentSet(n int) identSet {
	if n > identSetFew {
		return identSet{many: make(map[string]string, n)}
	}
	return identSet{few: make([]identPair, 0, n)}
}

// get returns the identifier passed for id.
func (s *identSet) get(id string) (string, bool) {
	if s.many != nil {
		ident, ok := s.many[id]
		return ident, ok
	}
	for _, p := range s.few {
		if p.id == id {
			return p.ident, true
		}
	}
	return "", false
}

// has reports whether id is in the set.
func (s *identSet) has(id string) bool {
	_, ok := s.get(id)
	return ok
}

// add records ident for id unless id is there already.
func (s *identSet) add(id, ident string) {
	if s.has(id) {
		return
	}
	if s.many != nil {
		s.many[id] = ident
		return
	}
	s.few = append(s.few, identPair{id, ident})
}

// ids yields every id, in no particular order.
func (s *identSet) ids() iter.Seq[string] {
	return func(yield func(string) bool) {
		if s.many != nil {
			for id := range s.many {
				if !yield(id) {
					return
				}
			}
			return
		}
		for _, p := range s.few {
			if !yield(p.id) {
				return
			}
		}
	}
}
