package armtest

import "testing"

func TestSmoke(t *testing.T) {
	Check(t, `
	mov x0, #5
	add x1, x0, #7
	adrp x2, scratch
	add x2, x2, :lo12:scratch
	ldr x3, [x2, #8]
	str x1, [x2]
`)
}
