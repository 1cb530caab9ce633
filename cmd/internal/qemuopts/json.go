package qemuopts

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// parseJSON reads a JSON object into dotted keys, as QEMU's keyval flattening names
// them: {"file":{"driver":"file"}} gives file.driver, arrays give key.0, key.1.
// Booleans become on/off; numbers keep their JSON text.
func (o *Opts) parseJSON(spec string) error {
	d := json.NewDecoder(bytes.NewReader([]byte(spec)))
	d.UseNumber()
	var top map[string]any
	if err := d.Decode(&top); err != nil {
		return o.errorf("invalid JSON: %v", err)
	}
	if d.More() {
		return o.errorf("invalid JSON: trailing data after the object")
	}
	// Keep the object's own key order: decode it again token by token.
	return o.flattenOrdered(spec)
}

// flattenOrdered walks the JSON tokens so keys keep the order they were written in.
func (o *Opts) flattenOrdered(spec string) error {
	d := json.NewDecoder(bytes.NewReader([]byte(spec)))
	d.UseNumber()
	tok, err := d.Token()
	if err != nil || tok != json.Delim('{') {
		return o.errorf("invalid JSON: not an object")
	}
	return o.walkObject(d, "")
}

func (o *Opts) walkObject(d *json.Decoder, prefix string) error {
	n := 0
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return o.errorf("invalid JSON: %v", err)
		}
		k, _ := t.(string)
		if k == "" {
			return o.errorf("Invalid parameter '%s'", prefix)
		}
		if err := o.walkValue(d, prefix+k); err != nil {
			return err
		}
		n++
	}
	d.Token() // the closing brace; the first decode validated the syntax
	if n == 0 && prefix != "" {
		return o.errorf("Parameter '%s': an empty object cannot be expressed as options", prefix[:len(prefix)-1])
	}
	return nil
}

func (o *Opts) walkValue(d *json.Decoder, key string) error {
	t, err := d.Token()
	if err != nil {
		return o.errorf("invalid JSON: %v", err)
	}
	switch v := t.(type) {
	case json.Delim:
		switch v {
		case '{':
			return o.walkObject(d, key+".")
		case '[':
			i := 0
			for d.More() {
				if err := o.walkValue(d, key+"."+strconv.Itoa(i)); err != nil {
					return err
				}
				i++
			}
			d.Token()
			if i == 0 {
				return o.errorf("Parameter '%s': an empty list cannot be expressed as options", key)
			}
		}
	case string:
		o.Set(key, v)
	case json.Number:
		o.Set(key, v.String())
	case bool:
		if v {
			o.Set(key, "on")
		} else {
			o.Set(key, "off")
		}
	case nil:
		return o.errorf("Parameter '%s': null is not a value", key)
	}
	return nil
}
