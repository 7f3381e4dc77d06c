# The paper's recipe on OpenWebText instead of FineWeb (python data/prepare.py openwebtext).
include("config/paper_124m.py")
dataset = "openwebtext"
out_dir = "out/paper_124m_owt-{attention}"
