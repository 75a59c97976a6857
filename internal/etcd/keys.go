package etcd

import (
	"fmt"
	"net/url"
)

// keys builds the engine's keys under its prefix.
type keys string

func (k keys) format() string { return string(k) + formatKey }
func (k keys) session(id string) string {
	return string(k) + "s/" + url.PathEscape(id) + "/"
}
func (k keys) data(id string) string { return k.session(id) + "d/" }
func (k keys) meta(id string) string { return k.data(id) + "meta" }
func (k keys) end(id string) string  { return k.session(id) + "end" }
func (k keys) variable(id, varID string) string {
	return k.data(id) + "v/" + varID
}
func (k keys) history(id string, rev int64) string {
	return k.data(id) + "h/" + fmt.Sprintf("%016x", rev)
}
func (k keys) historyEnd(id string) string { return k.data(id) + "h0" } // "h0" sorts right after every "h/..."
func (k keys) indexPrefix() string         { return string(k) + "i/" }
func (k keys) index(id string) string      { return k.indexPrefix() + url.PathEscape(id) }
