from resnet_lab.train import main

if __name__ == "__main__":
    main()
