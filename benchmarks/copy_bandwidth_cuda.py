"""The memory ceiling of the GPU the benchmarks compare against: a 1 GiB device-to-device
copy through PyTorch (on the device machine's image), bytes read + written per second.

    python3 benchmarks/copy_bandwidth_cuda.py
"""

import torch


def main():
    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(20):
        b.copy_(a)
    end.record()
    torch.cuda.synchronize()
    print(f"copy bandwidth (read+write): {2 * 20 * a.numel() / (start.elapsed_time(end) / 1e3) / 1e12:.2f} TB/s")


if __name__ == "__main__":
    main()
