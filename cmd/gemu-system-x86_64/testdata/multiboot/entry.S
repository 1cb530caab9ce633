/* Multiboot (v1) test kernel entry: 32-bit protected mode, paging off. The header
   is the ELF form (no address fields) unless AOUT is defined, then it carries the
   a.out kludge (flag bit 16) with the addresses the linker script gives. */
#define MB_MAGIC 0x1BADB002
#ifdef AOUT
#define MB_FLAGS 0x00010003
#else
#define MB_FLAGS 0x00000003
#endif
	.section .multiboot, "a"
	.align 4
	.globl mb_header
mb_header:
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)
#ifdef AOUT
	.long mb_header   /* header_addr */
	.long _load_start /* load_addr */
	.long _edata      /* load_end_addr */
	.long _end        /* bss_end_addr */
	.long _start      /* entry_addr */
#endif

	.text
	.globl _start
_start:
	mov %eax, saved_eax
	mov %ebx, saved_ebx
	mov %esp, saved_esp
	pushf
	pop %ecx
	mov %ecx, saved_eflags
	mov $stack_top, %esp
	push saved_ebx
	push saved_eax
	call kmain
1:	cli
	hlt
	jmp 1b

	.data
	.globl saved_eax, saved_ebx, saved_esp, saved_eflags
saved_eax: .long 0
saved_ebx: .long 0
saved_esp: .long 0
saved_eflags: .long 0

	.bss
	.align 16
	.space 8192
stack_top:
