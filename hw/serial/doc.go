// Package serial owns the emulated UARTs: the 8250/16550A of the PC's COM ports
// (uart8250.go) and, for the arm virt board, the PL011. Each model is a bus.Device that
// sends guest output to a chardev.Backend and buffers host input, raising its interrupt
// line as the real chip does.
//
// It must not know about accelerators, boards or which interrupt controller the line
// reaches.
package serial
