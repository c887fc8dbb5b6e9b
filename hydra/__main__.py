from hydra.entry import main

main()
