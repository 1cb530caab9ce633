package monitor

import "strconv"

// events are the asynchronous events gemu emits, with their data members.
var events = []struct {
	name string
	data []arg
}{
	{"SHUTDOWN", []arg{{"guest", "boolean", false}, {"reason", "string", false}}},
	{"POWERDOWN", nil},
	{"RESET", []arg{{"guest", "boolean", false}, {"reason", "string", false}}},
	{"STOP", nil},
	{"RESUME", nil},
	{"BALLOON_CHANGE", []arg{{"actual", "integer", false}}},
}

// schema builds query-qmp-schema's answer from the command table: one entry per
// command and event, the object types of their arguments, and the builtin and array
// types those use. Type names are masked with numbers, as QEMU's are.
func (s *Server) schema() []map[string]any {
	var out []map[string]any
	types := map[string]string{} // object signature → masked name
	var typeDefs []map[string]any
	builtins := map[string]bool{"any": true}
	next := 0
	object := func(args []arg) string {
		sig := ""
		for _, a := range args {
			sig += a.name + ":" + a.typ + ":" + strconv.FormatBool(a.optional) + ";"
		}
		if n, ok := types[sig]; ok {
			return n
		}
		n := strconv.Itoa(next)
		next++
		types[sig] = n
		members := []map[string]any{}
		for _, a := range args {
			t := qapiType(a.typ)
			builtins[elem(t)] = true
			if t != elem(t) {
				builtins[t] = true
			}
			mm := map[string]any{"name": a.name, "type": t}
			if a.optional {
				mm["default"] = nil
			}
			members = append(members, mm)
		}
		typeDefs = append(typeDefs, map[string]any{"name": n, "members": members, "meta-type": "object"})
		return n
	}
	empty := object(nil)
	for _, c := range s.list {
		ret := "any"
		if c.ret == "empty" {
			ret = empty
		}
		out = append(out, map[string]any{"name": c.name, "ret-type": ret, "meta-type": "command", "arg-type": object(c.args)})
	}
	for _, e := range events {
		out = append(out, map[string]any{"name": e.name, "meta-type": "event", "arg-type": object(e.data)})
	}
	out = append(out, typeDefs...)
	for _, b := range []string{"any", "str", "int", "bool", "[str]"} {
		if !builtins[b] {
			continue
		}
		if b == "[str]" {
			out = append(out, map[string]any{"name": b, "element-type": "str", "meta-type": "array"})
			continue
		}
		out = append(out, map[string]any{"name": b, "json-type": map[string]string{"any": "value", "str": "string", "int": "int", "bool": "boolean"}[b], "meta-type": "builtin"})
	}
	return out
}

func qapiType(t string) string {
	switch t {
	case "string":
		return "str"
	case "integer":
		return "int"
	case "boolean":
		return "bool"
	case "array":
		return "[str]"
	}
	return "any"
}

func elem(t string) string {
	if t == "[str]" {
		return "str"
	}
	return t
}
