from cng_datasets.cli import main

main()
