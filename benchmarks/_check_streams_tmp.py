import sys, numpy as np, rasterio
sys.path.insert(0, ".")
from geoseg import engine
from geoseg.models import load_model
from geoseg.run import RunConfig, segment_scene
m = load_model(".bench/efb4")
a = segment_scene("/tmp/gb/s2-16384.tif", "/tmp/a.tif", RunConfig(device="cuda", precision="fp32", overwrite=True, batch_size=16), model=m)
engine.CHUNK_COLS = 512
b = segment_scene("/tmp/gb/s2-16384.tif", "/tmp/b.tif", RunConfig(device="cuda", precision="fp32", overwrite=True, batch_size=16, block_size=8192), model=m)
x, y = rasterio.open("/tmp/a.tif").read(1), rasterio.open("/tmp/b.tif").read(1)
print("agreement blocks 2048 vs 8192 + chunk cols 512 (fp32, GPU):", (x == y).mean(), "classes", np.bincount(x.ravel(), minlength=3)[:3] / x.size, a.seconds, b.seconds)
