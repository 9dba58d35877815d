"""A plain torch script made an fobsgd_mpi job: ResNet-18 on CIFAR-10, its gradients one-bit
compressed (FO-SGD) and exchanged through a parameter server on rank 0.

    mpirun -n 3 python examples/resnet18_cifar.py --data ~/cifar --steps 2000 --out results/r18.h5
    mpirun -n 3 python examples/resnet18_cifar.py --steps 3        # synthetic images, no data needed
    mpirun -n 3 python examples/resnet18_cifar.py --device cuda    # each rank on its node-local GPU

--data is a folder holding CIFAR-10's python version (cifar-10-batches-py, as torchvision
downloads it; nothing is downloaded here). Without it the script makes synthetic 10-class
images whose classes differ by their mean pattern. Worker 1 evaluates every --eval-every steps,
after the workers' batch-norm statistics are averaged; the server saves the final model.
"""
import argparse
import os

import torch
import torch.nn.functional as F
import torchvision

import fobsgd_mpi as fo


def datasets(folder, image_size, seed):
    """(train, test) as torch datasets of (image, label): CIFAR-10 from `folder`, else synthetic."""
    if folder:
        transform = torchvision.transforms.ToTensor()
        return (torchvision.datasets.CIFAR10(folder, train=True, transform=transform),
                torchvision.datasets.CIFAR10(folder, train=False, transform=transform))
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.randn(10, 3, image_size, image_size, generator=generator)

    def make(n):
        labels = torch.randint(0, 10, (n,), generator=generator)
        images = patterns[labels] + 2 * torch.randn(n, 3, image_size, image_size, generator=generator)
        return torch.utils.data.TensorDataset(images, labels)

    return make(2048), make(256)


def build_model(seed):
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10)
    model.fc = torch.nn.Sequential(torch.nn.Dropout(0.2), model.fc)
    return model


@torch.no_grad()
def evaluate(model, test_set, batch_size=256):
    """(mean loss, accuracy) on `test_set` in eval mode (dropout off, batch norm on its statistics)."""
    dev = next(model.parameters()).device
    model.eval()
    loss, correct = 0.0, 0
    for x, y in torch.utils.data.DataLoader(test_set, batch_size=batch_size):
        x, y = x.to(dev), y.to(dev)
        out = model(x)
        loss += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
    model.train()
    return loss / len(test_set), correct / len(test_set)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="folder with cifar-10-batches-py; none: synthetic images")
    p.add_argument("--image-size", type=int, default=32, help="side of the synthetic images")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32, help="per worker")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--algorithm", default="fo-sgd")
    p.add_argument("--out", help="HDF5 results file (none: results/<algorithm>-api-...h5)")
    p.add_argument("--save-model", help="the server writes the final state_dict here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (and --save-model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda (this rank's node-local GPU) or cuda:N")
    p.add_argument("--codec", default="auto", help="native (CPU), torch, or auto: the device's own")
    args = p.parse_args()
    if args.save_model and os.path.exists(args.save_model) and not args.overwrite:
        p.error(f"{args.save_model} exists; pass --overwrite or choose another --save-model")
    torch.set_num_threads(1)

    fo.init()
    dev = fo.local_device(args.device)
    train_set, test_set = datasets(args.data, args.image_size, args.seed)
    model = build_model(args.seed).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    opt = fo.DistributedOptimizer(opt, model, algorithm=args.algorithm, scheduler=schedule, out=args.out,
                                  seed=args.seed, overwrite=args.overwrite, min_compress_numel=1024, codec=args.codec)
    if fo.is_server():
        fo.serve()
        if args.save_model:
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, args.save_model)
    else:
        worker, n_workers = fo.rank() - 1, fo.size() - 1
        shard = torch.utils.data.Subset(train_set, range(worker, len(train_set), n_workers))
        batches = torch.utils.data.DataLoader(shard, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                              generator=torch.Generator().manual_seed(args.seed + worker))
        step = 0
        while step < args.steps:
            for x, y in batches:
                x, y = x.to(dev), y.to(dev)
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                step += 1
                if step % args.eval_every == 0 or step == args.steps:
                    opt.average_buffers()
                    if worker == 0:
                        test_loss, test_accuracy = evaluate(model, test_set)
                        fo.log(train_loss=loss.item(), test_loss=test_loss, test_accuracy=test_accuracy)
                if step == args.steps:
                    break
    fo.shutdown()


if __name__ == "__main__":
    main()
