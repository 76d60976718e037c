from timm_scaling.cli import main

main()
